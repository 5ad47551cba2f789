package main

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"strings"

	"github.com/ratatoskr-mq/ratatoskr/engine"
)

// dashboardURLCmd prints the dashboard's address with the admin token. The
// broker's log names only where the token is: a log line travels to log
// stores and terminals that people other than the operator read.
type dashboardURLCmd struct {
	Data       string `default:"./data" env:"RATATOSKR_DATA" help:"The broker's data directory, which holds admin.token."`
	HTTPAddr   string `default:"127.0.0.1:8080" env:"RATATOSKR_HTTP_ADDR" name:"http-addr" help:"The broker's HTTP address."`
	AdminToken string `env:"RATATOSKR_ADMIN_TOKEN" secret:"" help:"The admin token the broker was given, if any; else it is read from <data>/admin.token."`
	HTTPS      bool   `name:"https" env:"RATATOSKR_HTTPS" help:"The broker serves HTTPS (it was given --tls-cert): print an https:// address."`
}

func (c *dashboardURLCmd) Run() error {
	if c.HTTPAddr == "" {
		return errors.New("--http-addr is empty: a broker without HTTP serves no dashboard")
	}
	tok := c.AdminToken
	if tok == "" {
		var err error
		if tok, err = readTokenFile(c.Data); err != nil {
			return err
		}
	}
	scheme := "http"
	if c.HTTPS {
		scheme = "https"
	}
	fmt.Println(engine.DashboardURLScheme(scheme, browsable(c.HTTPAddr), tok))
	return nil
}

// readTokenFile reads the token a broker generated into its data directory.
func readTokenFile(data string) (string, error) {
	path := engine.AdminTokenPath(data)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("no admin token at %s: start the broker once with --data %s to generate one, "+
			"or give the broker's token with --admin-token", path, data)
	}
	if err != nil {
		return "", fmt.Errorf("read the admin token: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("%s is empty; delete it and restart the broker to generate a token", path)
	}
	return tok, nil
}

// browsable turns a listen address into one a browser can open: a
// wildcard host (empty, 0.0.0.0, ::) becomes 127.0.0.1.
func browsable(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}
