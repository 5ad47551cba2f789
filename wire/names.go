package wire

// MaxTopicNameLen bounds topic names so they fit a file name and a Str16.
const MaxTopicNameLen = 249

var errTopicName = &Error{Code: CodeInvalidArgument,
	Message: "topic names are 1-249 characters of a-z, A-Z, 0-9, '.', '_' and '-', and not '.' or '..'"}

// ValidateTopicName checks a topic name. Names become directory names once
// topics are stored on disk, so the alphabet is that of a portable file name.
func ValidateTopicName(name string) error {
	if len(name) == 0 || len(name) > MaxTopicNameLen || name == "." || name == ".." {
		return errTopicName
	}
	for i := 0; i < len(name); i++ {
		if !topicNameChar(name[i]) {
			return errTopicName
		}
	}
	return nil
}

func topicNameChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		c == '.' || c == '_' || c == '-'
}

// TenantSep joins a tenant's name and a topic or group name into the name
// the broker keeps ("acme~orders"). Clients never see it and cannot send
// it: it is outside the alphabet of names, so no name on the wire reaches
// another tenant's topic or group, and tenant names (a-z, 0-9, '_', '-')
// never hold it.
const TenantSep = '~'

// Qualify is the broker's name for a tenant's topic or group name; a
// name of no tenant is itself.
func Qualify(tenant, name string) string {
	if tenant == "" {
		return name
	}
	return tenant + string(TenantSep) + name
}

// Unqualified is a broker-side name as its tenant's clients know it.
func Unqualified(name string) string {
	for i := 0; i < len(name); i++ {
		if name[i] == TenantSep {
			return name[i+1:]
		}
	}
	return name
}

// TenantOf is the tenant of a broker-side name, "" for none.
func TenantOf(name string) string {
	for i := 0; i < len(name); i++ {
		if name[i] == TenantSep {
			return name[:i]
		}
	}
	return ""
}

// ValidateQualifiedName checks a broker-side topic name: a topic name,
// optionally qualified by a tenant, 249 bytes at most in all (it names a
// directory).
func ValidateQualifiedName(name string) error {
	tenant, rest := TenantOf(name), Unqualified(name)
	if tenant == "" && len(rest) != len(name) {
		return errTopicName // "~orders"
	}
	if err := ValidateTopicName(rest); err != nil {
		return err
	}
	if len(name) > MaxTopicNameLen {
		return &Error{Code: CodeInvalidArgument, Message: "the topic name is too long for its tenant: tenant and name together are at most 249 characters"}
	}
	for i := 0; i < len(tenant); i++ {
		if c := tenant[i]; (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '_' && c != '-' {
			return errTopicName
		}
	}
	return nil
}
