package main

// Sizes and durations in human units, for every flag, variable and config
// file value of the CLI: `64MiB`, `1GiB`, `7d`, `1h30m`. kong decodes a
// flag and its RATATOSKR_* variable with the same Decode, so the two always
// accept the same text, and help prints defaults as they are written.
//
// byteSize and duration are meant for any command's flags (loadtest's
// included): declare a field as byteSize or duration, write its default in
// units (`default:"256KiB"`), and convert with int64(v) or v.D().

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/alecthomas/kong"
)

// byteSize is a number of bytes, written as a plain integer or with a
// unit: B, binary KiB MiB GiB TiB (powers of 1024) or decimal KB MB GB TB
// (powers of 1000), in any case, with an optional fraction (`1.5GiB`). A
// negative size parses, so that the setting's own check can say why it is
// wrong where it is used.
type byteSize int64

var sizeUnits = []struct {
	name string
	mult int64
}{
	{"tib", 1 << 40}, {"gib", 1 << 30}, {"mib", 1 << 20}, {"kib", 1 << 10},
	{"tb", 1e12}, {"gb", 1e9}, {"mb", 1e6}, {"kb", 1e3}, {"b", 1},
}

// parseSize reads a byteSize.
func parseSize(s string) (byteSize, error) {
	text := strings.TrimSpace(s)
	lower := strings.ToLower(text)
	mult := int64(1)
	for _, u := range sizeUnits {
		if num, ok := strings.CutSuffix(lower, u.name); ok {
			lower, mult = strings.TrimSpace(num), u.mult
			break
		}
	}
	if n, err := strconv.ParseInt(lower, 10, 64); err == nil {
		if n != 0 && (n > math.MaxInt64/mult || n < math.MinInt64/mult) {
			return 0, fmt.Errorf("size %q is too large", s)
		}
		return byteSize(n * mult), nil
	}
	f, err := strconv.ParseFloat(lower, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) || lower == "" || strings.ContainsAny(lower, "xXpPeEiInN") {
		return 0, fmt.Errorf("size %q: want bytes such as 1048576, 64MiB, 1GiB or 500MB", s)
	}
	v := f * float64(mult)
	if v != math.Trunc(v) {
		return 0, fmt.Errorf("size %q is not a whole number of bytes", s)
	}
	if math.Abs(v) >= math.MaxInt64 {
		return 0, fmt.Errorf("size %q is too large", s)
	}
	return byteSize(v), nil
}

// String writes the size in the largest binary unit that holds it
// exactly: 64MiB, 1GiB, 1500.
func (b byteSize) String() string {
	n := int64(b)
	if n == 0 {
		return "0"
	}
	for _, u := range sizeUnits[:4] {
		if n%u.mult == 0 {
			return strconv.FormatInt(n/u.mult, 10) + sizeUnitNames[u.name]
		}
	}
	return strconv.FormatInt(n, 10)
}

var sizeUnitNames = map[string]string{"tib": "TiB", "gib": "GiB", "mib": "MiB", "kib": "KiB"}

// Decode implements kong.MapperValue.
func (b *byteSize) Decode(ctx *kong.DecodeContext) error {
	s, err := popText(ctx, "size")
	if err != nil {
		return err
	}
	v, err := parseSize(s)
	if err != nil {
		return err
	}
	*b = v
	return nil
}

// duration is a time.Duration that also takes days (`7d`, `1d12h`) and
// prints without zero units (`1h`, not `1h0m0s`; `7d`, not `168h0m0s`).
type duration time.Duration

// D is the duration as a time.Duration.
func (d duration) D() time.Duration { return time.Duration(d) }

// parseDuration reads a Go duration whose parts may also be days.
func parseDuration(s string) (duration, error) {
	text := strings.TrimSpace(s)
	bad := fmt.Errorf("duration %q: want a duration such as 250ms, 90s, 1h30m or 7d", s)
	if text == "" {
		return 0, bad
	}
	neg := false
	rest := text
	if rest[0] == '-' || rest[0] == '+' {
		neg, rest = rest[0] == '-', rest[1:]
	}
	if rest == "0" {
		return 0, nil
	}
	var total time.Duration
	for rest != "" {
		i := strings.IndexFunc(rest, func(r rune) bool { return (r < '0' || r > '9') && r != '.' })
		if i <= 0 {
			return 0, bad
		}
		j := i + strings.IndexFunc(rest[i:], func(r rune) bool { return (r >= '0' && r <= '9') || r == '.' })
		if j < i {
			j = len(rest)
		}
		num, unit := rest[:i], rest[i:j]
		var part time.Duration
		if unit == "d" {
			f, err := strconv.ParseFloat(num, 64)
			if err != nil || f*24 > float64(math.MaxInt64/int64(time.Hour)) {
				return 0, bad
			}
			part = time.Duration(f * 24 * float64(time.Hour))
		} else {
			p, err := time.ParseDuration(num + unit)
			if err != nil {
				return 0, bad
			}
			part = p
		}
		if total > math.MaxInt64-part {
			return 0, bad
		}
		total += part
		rest = rest[j:]
	}
	if neg {
		total = -total
	}
	return duration(total), nil
}

// String writes the duration with days for whole days and without zero
// units: 7d, 1d12h, 1h30m, 250ms, 0s.
func (d duration) String() string {
	v := time.Duration(d)
	sign := ""
	if v < 0 {
		sign, v = "-", -v
	}
	const day = 24 * time.Hour
	days := v / day
	v -= days * day
	var out string
	if days > 0 {
		out = strconv.FormatInt(int64(days), 10) + "d"
		if v == 0 {
			return sign + out
		}
	}
	s := v.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return sign + out + s
}

// Decode implements kong.MapperValue.
func (d *duration) Decode(ctx *kong.DecodeContext) error {
	s, err := popText(ctx, "duration")
	if err != nil {
		return err
	}
	v, err := parseDuration(s)
	if err != nil {
		return err
	}
	*d = v
	return nil
}

// popText takes a flag's value as text: from the command line, a
// variable or a default, kong hands it over as a string.
func popText(ctx *kong.DecodeContext, what string) (string, error) {
	t, err := ctx.Scan.PopValue(what)
	if err != nil {
		return "", err
	}
	switch v := t.Value.(type) {
	case string:
		return v, nil
	case fmt.Stringer:
		return v.String(), nil
	}
	return fmt.Sprint(t.Value), nil
}
