package main

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{
		"0": 0, "1048576": 1 << 20, "64MiB": 64 << 20, "64mib": 64 << 20, "1GiB": 1 << 30, "1.5GiB": 3 << 29,
		"500MB": 500e6, "2kb": 2000, "4KiB": 4096, "1TiB": 1 << 40, "10B": 10, "-5": -5, "8 MiB": 8 << 20,
	} {
		got, err := parseSize(in)
		require.NoError(t, err, in)
		require.Equal(t, want, int64(got), in)
	}
	for _, in := range []string{"", "MiB", "lots", "1.5B", "0x10", "1e6", "inf", "NaN", "64MiBs", "9999999TiB"} {
		_, err := parseSize(in)
		require.Error(t, err, in)
	}
	for n, want := range map[int64]string{0: "0", 1500: "1500", 4096: "4KiB", 64 << 20: "64MiB", 1 << 30: "1GiB",
		3 << 29: "1536MiB", 128 << 20: "128MiB"} {
		require.Equal(t, want, byteSize(n).String())
	}
}

func TestParseDuration(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"0": 0, "0s": 0, "250ms": 250 * time.Millisecond, "1h30m": 90 * time.Minute, "7d": 7 * 24 * time.Hour,
		"1d12h": 36 * time.Hour, "1.5d": 36 * time.Hour, "-1h": -time.Hour, "10us": 10 * time.Microsecond,
		"20µs": 20 * time.Microsecond,
	} {
		got, err := parseDuration(in)
		require.NoError(t, err, in)
		require.Equal(t, want, got.D(), in)
	}
	for _, in := range []string{"", "5", "soon", "1x", "d", "h1", "1h-5m", "9999999999d"} {
		_, err := parseDuration(in)
		require.Error(t, err, in)
	}
	for d, want := range map[time.Duration]string{0: "0s", time.Hour: "1h", 168 * time.Hour: "7d",
		36 * time.Hour: "1d12h", 90 * time.Minute: "1h30m", 250 * time.Millisecond: "250ms", -time.Hour: "-1h",
		10 * time.Second: "10s"} {
		require.Equal(t, want, duration(d).String())
	}
}
