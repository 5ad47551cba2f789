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
