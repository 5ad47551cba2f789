// Package broker holds what the benchmark tools share to run a broker as
// a subprocess: a free loopback address to give it, and a wait until it
// listens there.
package broker

import (
	"fmt"
	"net"
	"time"
)

// FreeAddr returns a loopback address no one listens on now.
func FreeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer func() { _ = l.Close() }()
	return l.Addr().String(), nil
}

// WaitListening waits up to 10 s for something to accept connections at
// addr (a broker just started there).
func WaitListening(addr string) error {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.Dial("tcp", addr); err == nil {
			_ = c.Close()
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("broker did not listen on %s", addr)
}
