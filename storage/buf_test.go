package storage

import (
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestSizeClass(t *testing.T) {
	require.Equal(t, 0, sizeClass(1))
	require.Equal(t, 0, sizeClass(256))
	require.Equal(t, 1, sizeClass(257))
	require.Equal(t, 1, sizeClass(512))
	require.Equal(t, numClasses-1, sizeClass(8<<20))
	require.Equal(t, -1, sizeClass(8<<20+1))
}

func TestBufLengthAndReuse(t *testing.T) {
	for _, n := range []int{0, 1, 300, 64 << 10, 8<<20 + 5} {
		b := NewBuf(n)
		require.Len(t, b.B, n)
		for i := range b.B {
			b.B[i] = byte(i)
		}
		b.Release()
	}
}

func TestBufRefCounting(t *testing.T) {
	b := NewBuf(100)
	var wg sync.WaitGroup
	for range 8 {
		b.Retain()
		wg.Go(func() {
			_ = b.B[99]
			b.Release()
		})
	}
	wg.Wait()
	require.Equal(t, int32(1), b.Refs())
	b.Release()
	require.Panics(t, func() { b.Release() }, "a release past zero is a broken invariant")
}
