// Command clusterbench measures two figures of a three-node cluster on
// 127.0.0.1 that it starts itself (bin/ratatoskr serve, three processes):
//
//   - failover: a producer publishes a message every millisecond to a
//     replicated partition's leader; the leader is killed (SIGKILL); the
//     time from the kill to the next acknowledged publish, at whichever
//     node leads next, is the failover time. Repeated -rounds times, the
//     killed node restarted in between.
//
//   - idle: -partitions replicated partitions (replicas 3) sit idle; the
//     CPU the three processes use over -idle (from /proc) is the cost.
//
//   - catchup: a follower is killed; -messages messages of 128 B are
//     published to the partition, -per-batch to a batch (sync publishes
//     from 16 producers: a batch is a Raft entry); the follower restarts,
//     and the time until it has committed everything the leader had is
//     its catch-up, from the leader's segments.
//
//     go build -o bin/ratatoskr ./cmd/ratatoskr
//     go run ./bench/clusterbench -mode failover -rounds 10
//     go run ./bench/clusterbench -mode idle -partitions 1000
//     go run ./bench/clusterbench -mode catchup -messages 200000 -per-batch 1
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ratatoskr-mq/ratatoskr/client"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

type node struct {
	id      int
	addr    string
	cluster string
	http    string
	dir     string
	cmd     *exec.Cmd
}

func main() {
	mode := flag.String("mode", "failover", "failover or idle")
	bin := flag.String("bin", "bin/ratatoskr", "the broker binary")
	rounds := flag.Int("rounds", 10, "failover rounds")
	partitions := flag.Int("partitions", 1000, "idle partitions")
	idle := flag.Duration("idle", 30*time.Second, "how long the idle cluster is measured")
	flag.DurationVar(&settle, "settle", settle, "how long the idle partitions are given to go quiet first")
	base := flag.Int("port", 17100, "first port: native base+1..3, cluster base+11..13, HTTP base+21..23")
	messages := flag.Int("messages", 200000, "catchup: messages published while the follower is down")
	perBatch := flag.Int("per-batch", 1, "catchup: messages per batch (Raft entry)")
	flag.Parse()
	dir, err := os.MkdirTemp("", "clusterbench")
	check(err)
	defer func() { _ = os.RemoveAll(dir) }()
	var nodes []*node
	var peers []string
	for i := 1; i <= 3; i++ {
		n := &node{id: i, addr: "127.0.0.1:" + strconv.Itoa(*base+i), cluster: "127.0.0.1:" + strconv.Itoa(*base+10+i),
			http: "127.0.0.1:" + strconv.Itoa(*base+20+i), dir: filepath.Join(dir, "n"+strconv.Itoa(i))}
		nodes = append(nodes, n)
		peers = append(peers, strconv.Itoa(i)+"="+n.cluster)
	}
	for _, n := range nodes {
		start(*bin, n, strings.Join(peers, ","))
	}
	defer func() {
		for _, n := range nodes {
			if n.cmd != nil {
				_ = n.cmd.Process.Kill()
				_ = n.cmd.Wait()
			}
		}
	}()
	for _, n := range nodes {
		waitListening(n.addr)
	}
	switch *mode {
	case "failover":
		failover(*bin, nodes, strings.Join(peers, ","), *rounds)
	case "idle":
		idleCost(nodes, *partitions, *idle)
	case "catchup":
		catchUp(*bin, nodes, strings.Join(peers, ","), *messages, *perBatch)
	default:
		check(fmt.Errorf("unknown -mode %q", *mode))
	}
}

func start(bin string, n *node, peers string) {
	n.cmd = exec.Command(bin, "serve", "--node-id", strconv.Itoa(n.id), "--peers", peers, "--cluster-addr", n.cluster,
		"--addr", n.addr, "--http-addr", n.http, "--data", n.dir, "--log-level", "warn", "--admin-token", adminToken)
	n.cmd.Stdout, n.cmd.Stderr = os.Stderr, os.Stderr
	check(n.cmd.Start())
}

func waitListening(addr string) {
	for range 500 {
		if c, err := net.Dial("tcp", addr); err == nil {
			_ = c.Close()
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	check(fmt.Errorf("%s never listened", addr))
}

func dialAll(nodes []*node) map[string]*client.Client {
	out := map[string]*client.Client{}
	for _, n := range nodes {
		if n.cmd == nil {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		c, err := client.Dial(ctx, n.addr, client.WithoutReconnect())
		cancel()
		if err == nil {
			out[n.addr] = c
		}
	}
	return out
}

// createTopic creates a topic through any node, retrying while the
// cluster forms.
func createTopic(nodes []*node, name string, partitions int) {
	deadline := time.Now().Add(60 * time.Second)
	for {
		cs := dialAll(nodes)
		err := errors.New("no node reachable")
		for _, c := range cs {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			err = c.CreateTopic(ctx, name, client.TopicConfig{Partitions: partitions, Replicas: 3})
			cancel()
			if err == nil || errors.Is(err, wire.ErrTopicExists) {
				err = nil
				break
			}
		}
		for _, c := range cs {
			_ = c.Close()
		}
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			check(err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// publishOnce publishes one message to partition 0 through whichever node
// leads it, and returns that node's address.
func publishOnce(cs map[string]*client.Client, hint string, v []byte) (string, error) {
	try := []string{hint}
	for a := range cs {
		if a != hint {
			try = append(try, a)
		}
	}
	var last error
	for _, a := range try {
		c := cs[a]
		if c == nil {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		_, err := c.Publish(ctx, "failover", client.Message{Value: v}, client.ToPartition(0))
		cancel()
		if err == nil {
			return a, nil
		}
		last = err
		if _, addr, ok := wire.LeaderOf(err); ok && cs[addr] != nil && addr != a {
			ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
			_, err = cs[addr].Publish(ctx, "failover", client.Message{Value: v}, client.ToPartition(0))
			cancel()
			if err == nil {
				return addr, nil
			}
			last = err
		}
	}
	return "", last
}

func failover(bin string, nodes []*node, peers string, rounds int) {
	createTopic(nodes, "failover", 1)
	var took []time.Duration
	for r := range rounds {
		cs := dialAll(nodes)
		lead := ""
		for deadline := time.Now().Add(60 * time.Second); lead == ""; {
			a, err := publishOnce(cs, "", []byte("warm"))
			if err == nil {
				lead = a
				break
			}
			if time.Now().After(deadline) {
				check(fmt.Errorf("no leader: %w", err))
			}
			time.Sleep(10 * time.Millisecond)
		}
		// Publish steadily for a moment, then kill the leader and time the
		// next acknowledged publish.
		for range 200 {
			_, _ = publishOnce(cs, lead, []byte("before"))
			time.Sleep(time.Millisecond)
		}
		var victim *node
		for _, n := range nodes {
			if n.addr == lead {
				victim = n
			}
		}
		_ = cs[lead].Close()
		delete(cs, lead)
		killed := time.Now()
		check(victim.cmd.Process.Signal(syscall.SIGKILL))
		_ = victim.cmd.Wait()
		victim.cmd = nil
		hint := ""
		for {
			a, err := publishOnce(cs, hint, []byte("after"))
			if err == nil {
				d := time.Since(killed)
				took = append(took, d)
				fmt.Printf("round %d: killed node %d (leader); acked again at %s after %v\n", r+1, victim.id, a, d.Round(time.Millisecond))
				break
			}
			hint = ""
			if time.Since(killed) > 60*time.Second {
				check(fmt.Errorf("no acknowledged publish 60s after the kill: %w", err))
			}
			time.Sleep(time.Millisecond)
		}
		for _, c := range cs {
			_ = c.Close()
		}
		start(bin, victim, peers)
		waitListening(victim.addr)
		time.Sleep(2 * time.Second) // let it catch up before the next round
	}
	slices.Sort(took)
	fmt.Printf("failover over %d rounds: min %v  median %v  max %v\n", len(took),
		took[0].Round(time.Millisecond), took[len(took)/2].Round(time.Millisecond), took[len(took)-1].Round(time.Millisecond))
}

// cpu returns a process's user+system CPU time from /proc.
func cpu(pid int) time.Duration {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	check(err)
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.ParseInt(fields[11], 10, 64)
	st, _ := strconv.ParseInt(fields[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ
}

// settle is how long idleCost lets the partitions go quiet.
var settle = 5 * time.Second

func idleCost(nodes []*node, partitions int, window time.Duration) {
	const per = 10
	for i := 0; i < partitions; i += per {
		createTopic(nodes, "idle"+strconv.Itoa(i/per), min(per, partitions-i))
	}
	fmt.Printf("created %d partitions (replicas 3); letting them go quiet\n", partitions)
	time.Sleep(settle)
	before := make([]time.Duration, len(nodes))
	for i, n := range nodes {
		before[i] = cpu(n.cmd.Process.Pid)
	}
	t0 := time.Now()
	time.Sleep(window)
	elapsed := time.Since(t0)
	var total time.Duration
	for i, n := range nodes {
		d := cpu(n.cmd.Process.Pid) - before[i]
		total += d
		fmt.Printf("node %d: %.2f%% of a core\n", n.id, 100*d.Seconds()/elapsed.Seconds())
	}
	fmt.Printf("%d idle partitions on three nodes: %.2f%% of a core in all, over %v\n", partitions,
		100*total.Seconds()/elapsed.Seconds(), elapsed.Round(time.Second))
}

const adminToken = "clusterbench"

// localGroup is what node n's admin API says of its replica of partition
// 0 of topic, and the partition's leader.
func localGroup(n *node, topic string) (commit uint64, preferred uint64, ok bool) {
	req, err := http.NewRequest("GET", "http://"+n.http+"/api/v1/cluster", nil)
	check(err)
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, 0, false
	}
	defer func() { _ = resp.Body.Close() }()
	var c struct {
		Partitions []struct {
			Topic     string   `json:"topic"`
			Partition int      `json:"partition"`
			Replicas  []uint64 `json:"replicas"`
			Local     *struct {
				Commit uint64 `json:"commit"`
			} `json:"local"`
		} `json:"partitions"`
	}
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&c) != nil {
		return 0, 0, false
	}
	for _, p := range c.Partitions {
		if p.Topic == topic && p.Partition == 0 && p.Local != nil && len(p.Replicas) > 0 {
			return p.Local.Commit, p.Replicas[0], true
		}
	}
	return 0, 0, false
}

func catchUp(bin string, nodes []*node, peers string, messages, perBatch int) {
	const topic = "catchup"
	createTopic(nodes, topic, 1)
	// The victim is not the partition's preferred leader, where its
	// leadership settles (docs/CLUSTER.md).
	var lead *node
	for deadline := time.Now().Add(60 * time.Second); lead == nil; {
		if _, id, ok := localGroup(nodes[0], topic); ok && id != 0 {
			lead = nodes[id-1]
			break
		}
		if time.Now().After(deadline) {
			check(errors.New("no leader"))
		}
		time.Sleep(20 * time.Millisecond)
	}
	victim := nodes[lead.id%3]
	var live []string
	for _, n := range nodes {
		if n != victim {
			live = append(live, n.addr)
		}
	}
	check(victim.cmd.Process.Signal(syscall.SIGKILL))
	_ = victim.cmd.Wait()
	victim.cmd = nil
	fmt.Printf("follower node %d killed; publishing %d messages of 128 B, %d per batch\n",
		victim.id, messages, perBatch)

	ctx := context.Background()
	c, err := client.DialCluster(ctx, strings.Join(live, ","))
	check(err)
	defer func() { _ = c.Close() }()
	const producers = 16
	errs := make(chan error, producers)
	t0 := time.Now()
	for p := range producers {
		go func() {
			batch := make([]client.Message, perBatch)
			for i := range batch {
				batch[i] = client.Message{Value: make([]byte, 128)}
			}
			var err error
			for i := p * perBatch; i < messages && err == nil; i += producers * perBatch {
				if perBatch == 1 {
					_, err = c.Publish(ctx, topic, batch[0], client.ToPartition(0))
					continue
				}
				if err = c.PublishBatchAsync(ctx, topic, batch, client.ToPartition(0)); err == nil {
					err = c.Flush(ctx)
				}
			}
			errs <- err
		}()
	}
	for range producers {
		check(<-errs)
	}
	fmt.Printf("published in %v\n", time.Since(t0).Round(time.Millisecond))
	// What the two live replicas committed: the larger is the leader's.
	var target uint64
	for _, n := range nodes {
		if n != victim {
			commit, _, _ := localGroup(n, topic)
			target = max(target, commit)
		}
	}
	start(bin, victim, peers)
	t1 := time.Now()
	for {
		commit, _, _ := localGroup(victim, topic)
		if commit >= target {
			break
		}
		if time.Since(t1) > 10*time.Minute {
			check(fmt.Errorf("the follower reached index %d of %d in 10 minutes", commit, target))
		}
		time.Sleep(10 * time.Millisecond)
	}
	d := time.Since(t1)
	bytes := float64(messages) * 128
	fmt.Printf("caught up %d entries (%d messages, %.1f MB of values) in %v from its restart: %.0f entries/s, %.1f MB/s\n",
		target, messages, bytes/1e6, d.Round(time.Millisecond), float64(target)/d.Seconds(), bytes/1e6/d.Seconds())
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "clusterbench:", err)
		os.Exit(1)
	}
}
