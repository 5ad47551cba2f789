package main

// The settings of `ratatoskr serve` come from four places, first found
// wins: a flag, its RATATOSKR_* variable, the --config file, the default.
//
// kong applies flags, variables and defaults. A kong resolver would not do
// for the file: kong lets resolvers override values taken from the
// environment, and reports their errors with the usage text. So Run applies
// the file itself, after kong, to each setting that neither a flag nor a
// variable set, and keeps where every value came from for --print-config
// and for the errors of Validate.
//
// The file is TOML: flat, typed (an integer is not a string), with comments,
// and read by a small library with no dependencies. Keys are the flag names:
//
//	max-topics    = 500
//	default-fsync = "interval=100ms"
//	retention     = "2h"

import (
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/alecthomas/kong"

	"github.com/ratatoskr-mq/ratatoskr/engine"
)

// origin is the kind of place a setting's value came from.
type origin uint8

const (
	fromDefault origin = iota
	fromFile
	fromEnv
	fromFlag
)

// source is where one setting's value came from.
type source struct {
	origin origin
	env    string // the variable, from the environment
	file   string // the config file's path, from the file
	line   int    // the key's line in the file; 0 if not found
}

func (s source) String() string {
	switch s.origin {
	case fromFlag:
		return "flag"
	case fromEnv:
		return "env " + s.env
	case fromFile:
		return "file " + s.position()
	}
	return "default"
}

// position is the file and line, as compilers print them.
func (s source) position() string {
	if s.line == 0 {
		return s.file
	}
	return s.file + ":" + strconv.Itoa(s.line)
}

// setting is one serve flag and where its value came from.
type setting struct {
	flag *kong.Flag
	src  source
}

// settings are the serve command's settings in the order of its flags.
type settings []setting

// notInFile are the flags that make no sense in the file they name.
var notInFile = []string{"config", "print-config"}

// resolve applies the config file, if any, to the settings that neither a
// flag nor the environment set, and returns every setting with its source.
func (s *serveCmd) resolve(k *kong.Context) (settings, error) {
	onCLI := map[*kong.Flag]bool{}
	for _, p := range k.Path {
		if p.Flag != nil && !p.Resolved {
			onCLI[p.Flag] = true
		}
	}
	flags := k.Selected().Flags
	var file *configFile
	if s.Config != "" {
		var err error
		if file, err = readConfigFile(s.Config); err != nil {
			return nil, err
		}
		if err := file.checkKeys(flags); err != nil {
			return nil, err
		}
		file.warnIfSecretExposed(os.Stderr)
	}
	set := make(settings, 0, len(flags))
	for _, f := range flags {
		st := setting{flag: f, src: sourceOf(f, onCLI[f])}
		if st.src.origin == fromDefault && f.Name == "retention" {
			env, err := s.retentionMS()
			if err != nil {
				return nil, err
			}
			if env != "" {
				st.src = source{origin: fromEnv, env: env}
			}
		}
		if st.src.origin == fromDefault && file != nil {
			if err := file.apply(&st); err != nil {
				return nil, err
			}
		}
		set = append(set, st)
	}
	return set, nil
}

// sourceOf tells whether kong took f from the command line or the
// environment. kong parses a variable that is present even when empty, so
// presence is what counts.
func sourceOf(f *kong.Flag, onCLI bool) source {
	if onCLI {
		return source{origin: fromFlag}
	}
	for _, env := range f.Tag.Envs {
		if _, ok := os.LookupEnv(env); ok {
			return source{origin: fromEnv, env: env}
		}
	}
	return source{}
}

// configFile is a parsed config file.
type configFile struct {
	path   string
	values map[string]any
	lines  map[string]int // top-level key → line, where found
}

func readConfigFile(path string) (*configFile, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config file: %w", err)
	}
	values := map[string]any{}
	if _, err := toml.Decode(string(data), &values); err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return nil, fmt.Errorf("%s:%d: %s", path, pe.Position.Line, pe.Message)
		}
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &configFile{path: path, values: values, lines: keyLines(string(data))}, nil
}

// warnIfSecretExposed warns when the file holds the admin token and
// others than its owner may read it.
func (c *configFile) warnIfSecretExposed(w io.Writer) {
	if _, ok := c.values["admin-token"]; !ok {
		return
	}
	if fi, err := os.Stat(c.path); err == nil && fi.Mode().Perm()&0o077 != 0 {
		_, _ = fmt.Fprintf(w, "warning: %s holds admin-token and is readable by others (mode %04o); chmod 600 it\n",
			c.path, fi.Mode().Perm())
	}
}

// source is where key's value is.
func (c *configFile) source(key string) source {
	return source{origin: fromFile, file: c.path, line: c.lines[key]}
}

// checkKeys rejects every key that is not a setting, all at once.
func (c *configFile) checkKeys(flags []*kong.Flag) error {
	known := map[string]bool{}
	for _, f := range flags {
		known[f.Name] = !slices.Contains(notInFile, f.Name)
	}
	var bad []string
	for key := range c.values {
		if !known[key] {
			bad = append(bad, key)
		}
	}
	slices.SortFunc(bad, func(a, b string) int { return c.lines[a] - c.lines[b] })
	errs := make([]error, 0, len(bad))
	for _, key := range bad {
		why := "unknown setting"
		if _, ok := known[key]; ok {
			why = "not allowed in a config file"
		} else if near := nearest(key, flags); near != "" {
			why += fmt.Sprintf(" (did you mean %s?)", near)
		}
		errs = append(errs, fmt.Errorf("%s: %s: %s", c.source(key).position(), key, why))
	}
	return errors.Join(errs...)
}

// apply sets st from the file if the file has it.
func (c *configFile) apply(st *setting) error {
	v, ok := c.values[st.flag.Name]
	if !ok {
		return nil
	}
	st.src = c.source(st.flag.Name)
	if err := setFromFile(st.flag, v); err != nil {
		return fmt.Errorf("%s: %s: %w", st.src.position(), st.flag.Name, err)
	}
	return nil
}

var (
	durationType = reflect.TypeFor[duration]()
	sizeType     = reflect.TypeFor[byteSize]()
)

// setFromFile sets f to a TOML value, which must have the setting's type:
// TOML has no durations, so they are strings such as "2h" or "7d"; a size
// is an integer of bytes or a string such as "64MiB".
func setFromFile(f *kong.Flag, v any) error {
	target := f.Target
	if target.Kind() == reflect.Pointer { // an optional setting: retention
		p := reflect.New(target.Type().Elem())
		if err := setValue(p.Elem(), v); err != nil {
			return err
		}
		target.Set(p)
	} else if err := setValue(target, v); err != nil {
		return err
	}
	if enum := f.EnumSlice(); f.Enum != "" && !slices.Contains(enum, fmt.Sprint(v)) {
		return fmt.Errorf("must be one of %s, not %q", strings.Join(enum, ", "), fmt.Sprint(v))
	}
	return nil
}

func setValue(target reflect.Value, v any) error {
	switch {
	case target.Type() == durationType:
		s, ok := v.(string)
		if !ok {
			return wrongType(`a duration string such as "2h", "250ms" or "7d"`, v)
		}
		d, err := parseDuration(s)
		if err != nil {
			return fmt.Errorf(`%q is not a duration such as "2h", "250ms" or "7d"`, s)
		}
		target.SetInt(int64(d))
	case target.Type() == sizeType:
		n, ok := v.(int64)
		if s, isString := v.(string); isString {
			b, err := parseSize(s)
			if err != nil {
				return fmt.Errorf(`%q is not a size such as 1048576, "64MiB" or "1GiB"`, s)
			}
			n, ok = int64(b), true
		}
		if !ok {
			return wrongType(`bytes: an integer, or a string such as "64MiB"`, v)
		}
		target.SetInt(n)
	case target.Kind() == reflect.Bool:
		b, ok := v.(bool)
		if !ok {
			return wrongType("true or false", v)
		}
		target.SetBool(b)
	case target.Kind() == reflect.Int || target.Kind() == reflect.Int64:
		n, ok := v.(int64)
		if !ok {
			return wrongType("an integer", v)
		}
		if target.OverflowInt(n) {
			return fmt.Errorf("%d is out of range", n)
		}
		target.SetInt(n)
	case target.Kind() == reflect.String:
		s, ok := v.(string)
		if !ok {
			return wrongType("a string", v)
		}
		target.SetString(s)
	default:
		return fmt.Errorf("a setting of type %s cannot come from a file", target.Type())
	}
	return nil
}

func wrongType(want string, v any) error {
	return fmt.Errorf("want %s, got %s %s", want, tomlType(v), tomlText(v))
}

// tomlType names the type of a value as the TOML specification does.
func tomlType(v any) string {
	switch v.(type) {
	case string:
		return "string"
	case int64:
		return "integer"
	case float64:
		return "float"
	case bool:
		return "boolean"
	case time.Time:
		return "datetime"
	case []any, []map[string]any:
		return "array"
	case map[string]any:
		return "table"
	}
	return fmt.Sprintf("%T", v)
}

func tomlText(v any) string {
	switch v := v.(type) {
	case string:
		return strconv.Quote(v)
	case []any, []map[string]any, map[string]any:
		return "" // may be long, and its line says it
	}
	return fmt.Sprint(v)
}

// keyLines finds the line of each top-level key: the TOML library does not
// tell where a key is. A top-level key is a `key = value` line before the
// first table, or the name of a table (`[key]`, `[key.sub]`, `[[key]]`).
func keyLines(data string) map[string]int {
	lines := map[string]int{}
	note := func(key string, line int) {
		key = strings.Trim(strings.TrimSpace(key), `"'`)
		if _, ok := lines[key]; !ok && key != "" {
			lines[key] = line
		}
	}
	inTable, inString := false, false
	for i, text := range strings.Split(data, "\n") {
		text = strings.TrimSpace(text)
		// A multi-line string opens or closes on a line with an odd count.
		if (strings.Count(text, `"""`)+strings.Count(text, `'''`))%2 == 1 {
			wasIn := inString
			inString = !inString
			if wasIn {
				continue
			}
		} else if inString {
			continue
		}
		switch {
		case strings.HasPrefix(text, "["):
			inTable = true
			name, _, _ := strings.Cut(strings.Trim(text, "[] \t"), ".")
			name, _, _ = strings.Cut(name, "]")
			note(name, i+1)
		case !inTable && text != "" && text[0] != '#':
			if key, _, ok := strings.Cut(text, "="); ok {
				key, _, _ = strings.Cut(key, ".") // a dotted key defines a table
				note(key, i+1)
			}
		}
	}
	return lines
}

// nearest is the setting a mistyped key most likely meant, or "".
func nearest(key string, flags []*kong.Flag) string {
	norm := strings.ToLower(strings.ReplaceAll(key, "_", "-"))
	best, bestDist := "", 3 // farther than two edits is no suggestion
	for _, f := range flags {
		if slices.Contains(notInFile, f.Name) {
			continue
		}
		if d := editDistance(norm, f.Name); d < bestDist {
			best, bestDist = f.Name, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}

// print writes every setting, its value and its source in aligned
// columns. Secrets show only their last four characters, and only when
// they are long enough to keep the rest secret.
func (set settings) print(w io.Writer, note func(name string) string) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	_, _ = fmt.Fprintln(tw, "SETTING\tVALUE\tSOURCE") // errors surface at Flush
	for _, st := range set {
		if st.flag.Name == "print-config" {
			continue
		}
		v := st.value()
		if n := note(st.flag.Name); n != "" {
			v += " " + n
		}
		_, _ = fmt.Fprintf(tw, "%s\t%s\t%s\n", st.flag.Name, v, st.src)
	}
	return tw.Flush()
}

// value is the setting's value as the user would write it, secrets masked.
func (st setting) value() string {
	v := st.flag.Target
	if st.flag.Tag.Has("secret") {
		return maskSecret(v.String())
	}
	if v.Kind() == reflect.Pointer {
		if v.IsNil() {
			return "(unset)"
		}
		v = v.Elem()
	}
	if v.Kind() == reflect.String && (v.String() == "" || strings.ContainsAny(v.String(), " \t\"")) {
		return strconv.Quote(v.String())
	}
	return fmt.Sprint(v.Interface()) // sizes and durations print in units
}

func maskSecret(s string) string {
	switch {
	case s == "":
		return `""`
	case len(s) < 16:
		return "(set)"
	}
	return "****" + s[len(s)-4:]
}

// engineFlags names the serve flag behind each engine.Config field, so an
// error from Validate names the setting the user wrote.
var engineFlags = map[string]string{
	"Addr": "addr", "HTTPAddr": "http-addr", "DataDir": "data", "TLSAddr": "tls-addr", "TLSCertFile": "tls-cert",
	"TLSKeyFile": "tls-key", "TLSClientCAFile": "tls-client-ca", "HTTPTLS": "http-tls", "GRPCAddr": "grpc-addr",
	"Shards": "shards", "EventLoops": "event-loops", "PinShards": "pin-shards",
	"MaxConnections": "max-connections", "MaxOpenFiles": "max-open-files",
	"MaxHandshakesPerAddr": "max-handshakes-per-address", "HandshakeTimeout": "handshake-timeout",
	"MaxTopics": "max-topics", "MaxSubscribers": "max-subscribers",
	"MaxMessageBytes": "max-message-bytes", "MaxFrameBytes": "max-frame-bytes",
	"MaxPendingBytes": "max-pending-bytes", "MaxAckDelay": "max-ack-delay",
	"SlowConsumerTimeout": "slow-consumer-timeout", "AutoCreateTopics": "auto-create-topics",
	"AutoCreateRate":    "auto-create-rate",
	"MaxFetchesPerConn": "max-fetches-per-connection", "MaxFetchWait": "max-fetch-wait",
	"MaxOutboundBytes": "max-outbound-bytes", "StuckConsumerAfter": "stuck-consumer-after",
	"DefaultPartitions": "default-partitions", "DefaultStorage": "default-storage",
	"DefaultFsync": "default-fsync", "DefaultRetention": "retention",
	"DefaultRetentionBytes": "retention-bytes", "MemoryTopicBytes": "memory-topic-bytes",
	"SegmentBytes": "segment-bytes", "CacheBytes": "cache-bytes", "GroupRetention": "group-retention",
	"OffsetsSegmentBytes": "offsets-segment-bytes", "CatchUpBytes": "catchup-bytes",
	"ShutdownTimeout": "shutdown-timeout", "Pprof": "pprof",
	"AdminToken": "admin-token", "AuditLog": "audit-log", "EventLog": "event-log",
	"AllowAnonymous": "allow-anonymous", "JWTIssuer": "jwt-issuer", "JWTKeyFile": "jwt-key",
	"JWTAudience": "jwt-audience", "AuthFailureBurst": "auth-failure-burst", "AuthFailureInterval": "auth-failure-interval",
	"NodeID": "node-id", "ClusterAddr": "cluster-addr", "Peers": "peers", "ClusterID": "cluster-id",
	"AdvertiseAddr": "advertise-addr", "RedisURL": "redis-url", "RedisPassword": "redis-password",
	"RedisPrefix": "redis-prefix", "RedisTLSCAFile": "redis-tls-ca", "RedisTLSCertFile": "redis-tls-cert",
	"RedisTLSKeyFile": "redis-tls-key", "RedisTimeout": "redis-timeout",
}

// fieldNames rewrites engine field names in Validate's reasons as flag
// names, longest first so DefaultRetentionBytes is not read as
// DefaultRetention.
var fieldNames = func() *strings.Replacer {
	fields := make([]string, 0, len(engineFlags))
	for f := range engineFlags {
		fields = append(fields, f)
	}
	slices.SortFunc(fields, func(a, b string) int { return len(b) - len(a) })
	pairs := make([]string, 0, 2*len(fields))
	for _, f := range fields {
		pairs = append(pairs, f, engineFlags[f])
	}
	return strings.NewReplacer(pairs...)
}()

// explain restates the errors of cfg.Validate in terms of the settings:
// which one, its value and where it came from. An error about a field no
// setting maps to stays as it is.
func (set settings) explain(cfg engine.Config, err error) error {
	errs := []error{err}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	}
	out := make([]error, 0, len(errs))
	for _, e := range errs {
		out = append(out, set.explainOne(cfg, e))
	}
	return errors.Join(out...)
}

// explainOne rewrites one "engine: Field = value: reason" error.
func (set settings) explainOne(cfg engine.Config, err error) error {
	field, _, ok := strings.Cut(strings.TrimPrefix(err.Error(), "engine: "), " = ")
	fv := reflect.ValueOf(cfg).FieldByName(field)
	if !ok || !fv.IsValid() {
		return err
	}
	why, ok := strings.CutPrefix(err.Error(), fmt.Sprintf("engine: %s = %v: ", field, fv.Interface()))
	if !ok {
		return err
	}
	// Validate reports a negative retention by size under DefaultRetention.
	if field == "DefaultRetention" && cfg.DefaultRetention >= 0 {
		field = "DefaultRetentionBytes"
	}
	i := slices.IndexFunc(set, func(st setting) bool { return st.flag.Name == engineFlags[field] })
	if i < 0 {
		return err
	}
	return fmt.Errorf("%s: %s (%s)", set[i].named(), fieldNames.Replace(why), field)
}

// named is the setting with its value, as its source spells it.
func (st setting) named() string {
	switch st.src.origin {
	case fromEnv:
		return st.src.env + "=" + st.value()
	case fromFile:
		return st.src.position() + ": " + st.flag.Name + " = " + st.value()
	case fromDefault:
		return "--" + st.flag.Name + "=" + st.value() + " (default)"
	}
	return "--" + st.flag.Name + "=" + st.value()
}
