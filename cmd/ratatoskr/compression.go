package main

import (
	"github.com/ratatoskr-mq/ratatoskr/client"
)

// compressionFlag is the --compression flag of the commands that publish
// (pub, loadtest). Consumers need none: they decompress what they get.
type compressionFlag struct {
	Compression string `default:"none" enum:"none,lz4,zstd,snappy" help:"Compress published batches: none, lz4, zstd or snappy (zstd compresses text best, lz4 and snappy cost the least CPU). Batches under 512 bytes are sent as they are."`
}

// codec is the flag's codec; kong has checked the name already.
func (f compressionFlag) codec() client.Codec {
	c, err := client.ParseCodec(f.Compression)
	if err != nil {
		return client.NoCompression
	}
	return c
}
