package vfs

import (
	"errors"

	"golang.org/x/sys/unix"
)

// fdatasync flushes the file's data, and the metadata needed to read it
// back, retrying on EINTR.
func fdatasync(fd uintptr) error {
	for {
		err := unix.Fdatasync(int(fd))
		if !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}
