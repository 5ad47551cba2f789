package engine

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/client"
	"github.com/ratatoskr-mq/ratatoskr/storage/crypt"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

func masterKey(t testing.TB) *crypt.MasterKey {
	k, err := crypt.NewMasterKey(crypt.NewDataKey())
	require.NoError(t, err)
	return k
}

// filesContain reports whether any file under dir holds s.
func filesContain(t testing.TB, dir, s string) bool {
	found := false
	require.NoError(t, filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err == nil && bytes.Contains(b, []byte(s)) {
			found = true
		}
		return err
	}))
	return found
}

func publishValues(t testing.TB, c *client.Client, topic, prefix string, from, to int) {
	ctx := testCtx(t)
	for i := from; i < to; i++ {
		_, err := c.Publish(ctx, topic, client.Message{Value: fmt.Appendf(nil, "%s%d", prefix, i)})
		require.NoError(t, err)
	}
}

// TestEncryptedTopicSurvivesRestartAndRotation: a topic encrypted by the
// broker-wide default is published to, its key rotated, published to
// again, and read back whole after a restart; its files hold neither the
// messages nor its data keys, while a plain topic's files hold its
// messages (the control); and live subscribers get the messages as sent.
func TestEncryptedTopicSurvivesRestartAndRotation(t *testing.T) {
	mk := masterKey(t)
	withKey := func(c *Config) { c.MasterKey, c.EncryptAtRest = mk, true }
	e := startBroker(t, withKey)
	ctx := testCtx(t)
	c := dial(t, e)
	require.NoError(t, c.CreateTopic(ctx, "sec", client.TopicConfig{Partitions: 1}))
	require.NoError(t, c.CreateTopic(ctx, "open", client.TopicConfig{Encryption: "off"}))
	require.NoError(t, c.CreateTopic(ctx, "mem", client.TopicConfig{Storage: "memory"}))
	info, err := c.DescribeTopic(ctx, "sec")
	require.NoError(t, err)
	require.Equal(t, "on", info.Config[ConfigEncryption])
	for name, want := range map[string]string{"open": "off", "mem": "off"} {
		info, err := c.DescribeTopic(ctx, name)
		require.NoError(t, err)
		require.Equal(t, want, info.Config[ConfigEncryption], name)
	}

	sub := dial(t, e)
	_, live, err := sub.SubscribeChan(ctx, "sec", 200)
	require.NoError(t, err)
	publishValues(t, c, "sec", "secret-", 0, 100)
	for i := range 100 {
		select {
		case d := <-live:
			require.Equal(t, fmt.Sprintf("secret-%d", i), string(d.Value), "live fan-out is the plain batch")
		case <-ctx.Done():
			t.Fatal("live delivery did not arrive")
		}
	}
	_, err = c.UpdateTopic(ctx, "sec", map[string]string{ActionRotateKey: "true"})
	require.NoError(t, err)
	publishValues(t, c, "sec", "secret-", 100, 200)
	publishValues(t, c, "open", "plain-", 0, 10)
	require.Equal(t, seq("secret-", 200), values(fetchAll(t, c, "sec", 0)))

	e.topics.mu.Lock()
	tk := e.topics.keys["sec"]
	require.NotNil(t, tk)
	require.Len(t, tk.wrapped, 2)
	var raw [][]byte
	for _, id := range tk.ring.IDs() {
		k, _ := tk.ring.Key(id)
		raw = append(raw, k)
	}
	e.topics.mu.Unlock()

	e = restart(t, e, withKey)
	c = dial(t, e)
	require.Equal(t, seq("secret-", 200), values(fetchAll(t, c, "sec", 0)), "both keys' batches read after a restart")
	publishValues(t, c, "sec", "secret-", 200, 210)
	require.Equal(t, seq("secret-", 210), values(fetchAll(t, c, "sec", 0)))
	require.NoError(t, e.Shutdown(context.Background()))

	dir := e.cfg.DataDir
	require.False(t, filesContain(t, dir+"/topics/sec", "secret-"), "an encrypted topic's files hold no message")
	require.True(t, filesContain(t, dir+"/topics/open", "plain-"), "a plain topic's do (the control)")
	require.Len(t, raw, 2)
	for _, k := range raw {
		for _, enc := range []string{string(k), hex.EncodeToString(k), base64.StdEncoding.EncodeToString(k)} {
			require.False(t, filesContain(t, dir, enc), "a data key is on disk in the clear")
		}
	}
}

// startErr starts a broker on dir with mutate and returns Start's error.
func startErr(t *testing.T, dir string, mutate func(*Config)) error {
	cfg := DefaultConfig()
	cfg.Addr, cfg.HTTPAddr, cfg.DataDir = "127.0.0.1:0", "", dir
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg.ShutdownTimeout = 5 * time.Second
	mutate(&cfg)
	e, err := New(cfg)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = e.Start(ctx)
	shutdown(t, e)
	return err
}

// TestEncryptedTopicRefusesToStartWithoutItsKey: a missing master key, a
// wrong one, and a damaged wrapped key each stop the broker at start
// with an error that names the topic and says what is wrong; with the
// right key it starts and serves the messages.
func TestEncryptedTopicRefusesToStartWithoutItsKey(t *testing.T) {
	mk := masterKey(t)
	e := startBroker(t, func(c *Config) { c.MasterKey = mk })
	c := dial(t, e)
	require.NoError(t, c.CreateTopic(testCtx(t), "vault", client.TopicConfig{Encryption: "on"}))
	publishValues(t, c, "vault", "m", 0, 20)
	require.NoError(t, e.Shutdown(context.Background()))
	dir := e.cfg.DataDir

	err := startErr(t, dir, func(*Config) {})
	require.ErrorContains(t, err, "topic vault is encrypted at rest")
	require.ErrorContains(t, err, "master key")

	other := masterKey(t)
	err = startErr(t, dir, func(c *Config) { c.MasterKey = other })
	require.ErrorContains(t, err, "topic vault")
	require.ErrorContains(t, err, "wrapped by master key "+mk.ID())
	require.ErrorContains(t, err, "the right master key")

	// Alter one byte of the wrapped key: same master key, no unwrap.
	meta := dir + "/" + metaFile
	orig, err := os.ReadFile(meta)
	require.NoError(t, err)
	var mf metaFileV1
	require.NoError(t, json.Unmarshal(orig, &mf))
	require.Equal(t, metaVersionEncrypted, mf.Version, "older brokers refuse a data directory with an encrypted topic")
	w, err := base64.StdEncoding.DecodeString(mf.Topics[0].Keys[0].Wrapped)
	require.NoError(t, err)
	w[20] ^= 1
	mf.Topics[0].Keys[0].Wrapped = base64.StdEncoding.EncodeToString(w)
	b, err := json.Marshal(mf)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(meta, b, 0o600))
	err = startErr(t, dir, func(c *Config) { c.MasterKey = mk })
	require.ErrorContains(t, err, "topic vault: data key 1 does not unwrap")
	require.ErrorContains(t, err, "damaged or altered")

	// A wrapped key moved to another topic's record does not open there
	// either (the wrap is bound to topic and id): rename the topic.
	mf.Topics[0].Keys[0].Wrapped = base64.StdEncoding.EncodeToString(append(w[:20:20], append([]byte{w[20] ^ 1}, w[21:]...)...))
	mf.Topics[0].Name = "vault2"
	b, err = json.Marshal(mf)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(meta, b, 0o600))
	err = startErr(t, dir, func(c *Config) { c.MasterKey = mk })
	require.ErrorContains(t, err, "topic vault2: data key 1 does not unwrap")

	require.NoError(t, os.WriteFile(meta, orig, 0o600))
	e = startBroker(t, func(c *Config) { c.DataDir, c.MasterKey = dir, mk })
	require.Equal(t, seq("m", 20), values(fetchAll(t, dial(t, e), "vault", 0)))
}

// TestEncryptionConfigIsChecked: what the encryption settings refuse.
func TestEncryptionConfigIsChecked(t *testing.T) {
	cfg := DefaultConfig()
	cfg.EncryptAtRest = true
	require.ErrorContains(t, cfg.Validate(), "EncryptAtRest")

	e := startBroker(t, nil)
	ctx := testCtx(t)
	c := dial(t, e)
	err := c.CreateTopic(ctx, "x", client.TopicConfig{Encryption: "on"})
	require.ErrorContains(t, err, "master key")
	requireCode(t, err, wire.CodeInvalidArgument)

	e2 := startBroker(t, func(c *Config) { c.MasterKey = masterKey(t) })
	c2 := dial(t, e2)
	err = c2.CreateTopic(ctx, "m", client.TopicConfig{Storage: "memory", Encryption: "on"})
	require.ErrorContains(t, err, "memory topic")
	err = c2.CreateTopic(ctx, "y", client.TopicConfig{Encryption: "maybe"})
	requireCode(t, err, wire.CodeInvalidArgument)
	require.NoError(t, c2.CreateTopic(ctx, "p", client.TopicConfig{}))
	var mf metaFileV1
	b, err := os.ReadFile(e2.cfg.DataDir + "/" + metaFile)
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(b, &mf))
	require.Equal(t, 1, mf.Version, "without an encrypted topic older brokers can still read it")
	_, err = c2.UpdateTopic(ctx, "p", map[string]string{ConfigEncryption: "on"})
	require.ErrorContains(t, err, "cannot be changed")
	_, err = c2.UpdateTopic(ctx, "p", map[string]string{ActionRotateKey: "true"})
	require.ErrorContains(t, err, "not encrypted")
}

func requireCode(t *testing.T, err error, code wire.Code) {
	t.Helper()
	var we *wire.Error
	require.ErrorAs(t, err, &we)
	require.Equal(t, code, we.Code)
}
