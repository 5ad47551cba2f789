package engine

import (
	"encoding/base64"
	"fmt"
	"slices"

	"github.com/ratatoskr-mq/ratatoskr/storage/crypt"
)

// Encryption at rest, the registry's part: each encrypted topic has data
// keys, kept in topics.json wrapped by the master key (Config.MasterKey)
// and bound to the topic and the key id, and held unwrapped in a keyring
// that the topic's logs seal and open batches with. The registry's mu
// guards keys; a keyring itself is safe for the logs' readers.

// metaKey is a wrapped data key as topics.json records it.
type metaKey struct {
	ID uint32 `json:"id"`
	// Master is the id of the master key that wrapped it
	// (crypt.KeyProvider.ID), so that a wrong master key is told apart
	// from a damaged wrapped key.
	Master  string `json:"master"`
	Wrapped string `json:"wrapped"` // base64
}

// topicKeys are an encrypted topic's data keys: wrapped, as recorded, and
// unwrapped in the keyring its logs use; current seals new batches.
type topicKeys struct {
	ring    *crypt.Keyring
	wrapped []metaKey
	current uint32
}

// newTopicKeys makes the first data key of a topic being created.
func (r *registry) newTopicKeys(name string) (*topicKeys, error) {
	if r.cfg.MasterKey == nil {
		return nil, invalid(ConfigEncryption + "=on needs the broker to have a master key " +
			"(serve --master-key-file or RATATOSKR_MASTER_KEY)")
	}
	tk := &topicKeys{ring: crypt.NewKeyring()}
	return tk, r.addKey(name, tk, 1)
}

// addKey makes a new data key id for topic name, wraps it into tk's
// record and makes it tk's current key. Callers persist tk's record
// before a log seals with it (rotate) or before the topic is visible
// (create).
func (r *registry) addKey(name string, tk *topicKeys, id uint32) error {
	key := crypt.NewDataKey()
	w, err := r.cfg.MasterKey.Wrap(key, crypt.WrapContext(name, id))
	if err != nil {
		return fmt.Errorf("wrap a data key for topic %s: %w", name, err)
	}
	tk.wrapped = append(tk.wrapped, metaKey{ID: id, Master: r.cfg.MasterKey.ID(),
		Wrapped: base64.StdEncoding.EncodeToString(w)})
	tk.current = id
	return tk.ring.Add(id, key, true)
}

// unwrapKeys opens an encrypted topic's recorded data keys with the
// master key. Every failure names the topic and says what to fix: the
// broker must not start serving a topic it cannot read, nor write new
// batches under a key it could not read back.
func (r *registry) unwrapKeys(name string, keys []metaKey, current uint32) (*topicKeys, error) {
	mk := r.cfg.MasterKey
	if mk == nil {
		return nil, fmt.Errorf("topic %s is encrypted at rest: start the broker with the master key "+
			"that wrapped its data keys (--master-key-file or RATATOSKR_MASTER_KEY)", name)
	}
	if len(keys) == 0 || !slices.ContainsFunc(keys, func(k metaKey) bool { return k.ID == current }) {
		return nil, fmt.Errorf("topic %s is encrypted at rest but %s records no data key %d (its current one): "+
			"the file is damaged", name, metaFile, current)
	}
	tk := &topicKeys{ring: crypt.NewKeyring(), wrapped: slices.Clone(keys), current: current}
	for _, k := range keys {
		w, err := base64.StdEncoding.DecodeString(k.Wrapped)
		var key []byte
		if err == nil {
			key, err = mk.Unwrap(w, crypt.WrapContext(name, k.ID))
		}
		if err != nil {
			if k.Master != mk.ID() {
				return nil, fmt.Errorf("topic %s: data key %d was wrapped by master key %s, but the broker has "+
					"master key %s: start it with the right master key", name, k.ID, k.Master, mk.ID())
			}
			return nil, fmt.Errorf("topic %s: data key %d does not unwrap under master key %s although "+
				"that key wrapped it: the wrapped key in %s is damaged or altered (%v)", name, k.ID, mk.ID(), metaFile, err)
		}
		if err := tk.ring.Add(k.ID, key, k.ID == current); err != nil {
			return nil, fmt.Errorf("topic %s: %w", name, err)
		}
	}
	return tk, nil
}

// rotateKey gives encrypted topic name a new current data key: recorded
// in the metadata file first, then handed to its logs, whose next batches
// use it; the batches already written keep theirs. The caller holds mu.
func (r *registry) rotateKey(name string, tc *TopicConfig) error {
	old := r.keys[name]
	if !tc.Encryption || old == nil {
		return invalid(ActionRotateKey + ": topic " + name + " is not encrypted at rest")
	}
	if r.cfg.MasterKey == nil {
		return invalid(ActionRotateKey + " needs the broker to have a master key")
	}
	next := &topicKeys{ring: crypt.NewKeyring(), wrapped: slices.Clone(old.wrapped), current: old.current}
	id := slices.MaxFunc(old.wrapped, func(a, b metaKey) int { return int(a.ID) - int(b.ID) }).ID + 1
	// The new key goes into a scratch ring: the topic's own takes it
	// only once it is recorded.
	if err := r.addKey(name, next, id); err != nil {
		return err
	}
	r.keys[name] = next
	err := r.persist(r.snap.Snapshot())
	r.keys[name] = old
	if err != nil {
		return err
	}
	key, _ := next.ring.Key(id)
	old.wrapped, old.current = next.wrapped, id
	if err := old.ring.Add(id, key, true); err != nil {
		return err
	}
	r.cfg.Logger.Info("rotated the data key of an encrypted topic", "topic", name, "key_id", id)
	return nil
}

// keyring is topic name's keyring, or nil when it is not encrypted. The
// caller holds mu.
func (r *registry) keyring(name string) *crypt.Keyring {
	if tk := r.keys[name]; tk != nil {
		return tk.ring
	}
	return nil
}
