//go:build !linux

package vfs

import "errors"

// fdatasync is unavailable here; the caller falls back to fsync.
func fdatasync(uintptr) error { return errors.ErrUnsupported }
