package devcert

import (
	"crypto/tls"
	"io"
	"net"
	"sync"
)

// Front terminates TLS in front of a plaintext broker, as a load balancer
// would: for tests and for trying the client's TLS before the broker
// terminates TLS itself.
type Front struct {
	ln    net.Listener
	to    string
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns []net.Conn
}

// NewFront listens on a free loopback port with cfg and forwards each
// connection to the broker at to.
func NewFront(cfg *tls.Config, to string) (*Front, error) {
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		return nil, err
	}
	f := &Front{ln: ln, to: to}
	f.wg.Add(1)
	go f.accept()
	return f, nil
}

// Addr is the address clients dial.
func (f *Front) Addr() string { return f.ln.Addr().String() }

func (f *Front) accept() {
	defer f.wg.Done()
	for {
		in, err := f.ln.Accept()
		if err != nil {
			return
		}
		out, err := net.Dial("tcp", f.to)
		if err != nil {
			_ = in.Close()
			continue
		}
		f.mu.Lock()
		f.conns = append(f.conns, in, out)
		f.mu.Unlock()
		f.wg.Add(2)
		go func() { defer f.wg.Done(); _, _ = io.Copy(out, in); _ = out.Close() }()
		go func() { defer f.wg.Done(); _, _ = io.Copy(in, out); _ = in.Close() }()
	}
}

// Close stops listening, closes every connection and waits for the
// forwarding goroutines.
func (f *Front) Close() error {
	err := f.ln.Close()
	f.mu.Lock()
	for _, c := range f.conns {
		_ = c.Close()
	}
	f.mu.Unlock()
	f.wg.Wait()
	return err
}
