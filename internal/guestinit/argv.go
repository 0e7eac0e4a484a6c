package guestinit

import (
	"encoding/json"
	"errors"
	"strings"
)

// argvPrefix marks an exec command that is an argv, not a shell string.
// No shell command starts with a NUL byte, and OpenSSH's client cannot
// send one, so a user's own ssh never hits it by accident.
const argvPrefix = "\x00argv\x00"

// EncodeArgv encodes argv as an SSH exec command that the guest init runs
// directly, without a shell. Strings must be valid UTF-8 (JSON carries
// them; invalid bytes would arrive as U+FFFD).
func EncodeArgv(argv []string) string {
	b, _ := json.Marshal(argv) // cannot fail for []string
	return argvPrefix + string(b)
}

// decodeArgv reports whether command is an encoded argv and decodes it.
func decodeArgv(command string) (argv []string, isArgv bool, err error) {
	rest, ok := strings.CutPrefix(command, argvPrefix)
	if !ok {
		return nil, false, nil
	}
	if err := json.Unmarshal([]byte(rest), &argv); err != nil {
		return nil, true, errors.New("malformed argv command: " + err.Error())
	}
	if len(argv) == 0 || argv[0] == "" {
		return nil, true, errors.New("malformed argv command: empty argv")
	}
	return argv, true, nil
}
