package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/ratatoskr-mq/ratatoskr/internal/devcert"
)

type certCmd struct {
	Dev certDevCmd `cmd:"" help:"Write a development CA, a server and a client certificate it signed (not for production: the CA's key is written beside it)."`
}

type certDevCmd struct {
	Dir   string   `default:"./certs" help:"Directory to write ca.pem, server.pem, client.pem and their -key.pem files into."`
	Host  []string `help:"Another name or IP address the server certificate is valid for (besides localhost, 127.0.0.1 and ::1); repeat for more."`
	Force bool     `help:"Replace files that exist."`
}

func (c *certDevCmd) Run() error {
	b, err := devcert.Generate(c.Host...)
	if err != nil {
		return err
	}
	if err := b.Write(c.Dir, c.Force); err != nil {
		return err
	}
	f := func(name string) string { return filepath.Join(c.Dir, name) }
	fmt.Fprintf(os.Stderr, "wrote %s (CA), %s (server), %s (client) and their keys; valid for a year\n",
		f(devcert.Files.CA), f(devcert.Files.Server), f(devcert.Files.Client))
	fmt.Fprintf(os.Stderr, "clients: --tls-ca %s [--tls-cert %s --tls-key %s]\n",
		f(devcert.Files.CA), f(devcert.Files.Client), f(devcert.Files.ClientKey))
	return nil
}
