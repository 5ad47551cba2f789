package client_test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// sinkEnv makes the test binary a sink (runSink) instead of running tests:
// startSink starts it so, as a child process, so that a benchmark's CPU
// figures hold the client's work and none of the broker's.
const sinkEnv = "RATATOSKR_TEST_SINK_PARTITIONS"

// startSink starts a sink in a child process, answering the topics it is
// asked about with partitions partitions, and returns its address. It
// serves one connection and exits when that closes; the cleanup waits for
// it.
func startSink(b testing.TB, partitions int) string {
	cmd := exec.Command(os.Args[0], "-test.run", "^$")
	cmd.Env = append(os.Environ(), sinkEnv+"="+strconv.Itoa(partitions))
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	exited := make(chan error, 1)
	line, err := bufio.NewReader(out).ReadString('\n')
	go func() { exited <- cmd.Wait() }()
	b.Cleanup(func() {
		select {
		case err := <-exited:
			if err != nil {
				b.Errorf("sink: %v", err)
			}
		case <-time.After(time.Minute):
			_ = cmd.Process.Kill()
			b.Errorf("sink: still running a minute after the benchmark")
			b.Logf("sink killed: %v", <-exited)
		}
	})
	if err != nil {
		_ = cmd.Process.Kill()
		b.Fatalf("sink: no address: %v", err)
	}
	return line[:len(line)-1]
}

// runSink is the child process's part: it listens on a loopback port,
// prints the address, serves one connection and returns the exit code.
func runSink(partitions string) int {
	n, err := strconv.Atoi(partitions)
	if err != nil || n < 1 {
		fmt.Fprintln(os.Stderr, "sink: bad partition count", partitions)
		return 2
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, "sink:", err)
		return 1
	}
	defer func() { _ = ln.Close() }()
	fmt.Println(ln.Addr().String())
	conn, err := ln.Accept()
	if err != nil {
		fmt.Fprintln(os.Stderr, "sink:", err)
		return 1
	}
	defer func() { _ = conn.Close() }()
	if err := serveSink(conn, n); err != nil {
		fmt.Fprintln(os.Stderr, "sink:", err)
		return 1
	}
	return 0
}

// serveSink answers Hello, InitProducer and DescribeTopic, and acks every
// Publish with the next offsets of its partition, storing nothing, until
// the client closes the connection. It allocates nothing per frame.
func serveSink(conn net.Conn, partitions int) error {
	buf := make([]byte, 0, 8<<20)
	var out []byte
	next := make([]int64, partitions)
	for {
		n, err := conn.Read(buf[len(buf):cap(buf)])
		if errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) {
			return nil // the client closed the connection
		}
		if err != nil {
			return err
		}
		buf = buf[:len(buf)+n]
		out = out[:0]
		rest := buf
		for {
			f, size, err := wire.ReadFrame(rest, uint32(cap(buf)))
			if err != nil {
				return err
			}
			if size == 0 {
				break
			}
			rest = rest[size:]
			switch f.Type {
			case wire.TypeHello:
				ok := wire.HelloOK{Version: wire.Version, MaxFrameBytes: wire.DefaultMaxFrameBytes,
					MaxMessageBytes: wire.DefaultMaxMessageBytes, ServerName: "sink", RunID: 1}
				body := ok.Append(nil)
				out = append(wire.AppendHeader(out, wire.TypeHelloOK, 0, f.Corr, len(body)), body...)
			case wire.TypeInitProducer:
				out = wire.AppendProducerID(out, f.Corr, 1)
			case wire.TypeDescribeTopic:
				info := wire.TopicInfo{Name: string(f.Body[2:]), Partitions: make([]wire.PartitionInfo, partitions)}
				for i := range info.Partitions {
					info.Partitions[i].ID = uint32(i)
				}
				body := info.Append(nil, wire.Version)
				out = append(wire.AppendHeader(out, wire.TypeTopicInfo, 0, f.Corr, len(body)), body...)
			case wire.TypePublish:
				v, err := wire.DecodeBatchView(f.Body)
				if err != nil {
					return err
				}
				p := v.Partition
				if p < 0 || int(p) >= partitions {
					p = 0 // PartitionAny: the sink's choice
				}
				count := v.Batch.Count()
				out = wire.AppendPublishAck(out, f.Corr, wire.PublishAck{Partition: p, BaseOffset: next[p], Count: uint32(count)})
				next[p] += int64(count)
			default:
				return fmt.Errorf("unexpected %s frame", f.Type)
			}
		}
		if len(out) > 0 {
			if _, err := conn.Write(out); err != nil {
				return err
			}
		}
		buf = buf[:copy(buf, rest)]
	}
}
