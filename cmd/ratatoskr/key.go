package main

import (
	"fmt"

	"github.com/ratatoskr-mq/ratatoskr/storage/crypt"
)

type keyCmd struct {
	Generate keyGenerateCmd `cmd:"" help:"Write a new random master key file (64 hex digits, mode 0600) for serve --master-key-file."`
}

type keyGenerateCmd struct {
	Path string `arg:"" help:"File to create; it must not exist."`
}

func (c *keyGenerateCmd) Run() error {
	k, err := crypt.GenerateMasterKeyFile(c.Path)
	if err != nil {
		return err
	}
	fmt.Printf("wrote master key %s to %s\nkeep a copy apart from the data directory: without it the encrypted topics cannot be read\n",
		k.ID(), c.Path)
	return nil
}
