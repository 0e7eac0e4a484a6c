package system

import (
	"slices"
	"strings"
)

// localeVars are dropped from a command's environment; LC_ALL=C is then
// appended so tools print the untranslated messages MatchStderr expects.
var localeVars = []string{"LC_ALL", "LANG", "LANGUAGE"}

// commandEnv builds a command's environment: parent, then extra (later
// entries win), minus the locale variables, then LC_ALL=C.
func commandEnv(parent, extra []string) []string {
	var env []string
	for _, kv := range slices.Concat(parent, extra) {
		if !isLocaleVar(kv) {
			env = append(env, kv)
		}
	}
	return append(env, "LC_ALL=C")
}

func isLocaleVar(kv string) bool {
	key, _, _ := strings.Cut(kv, "=")
	return slices.Contains(localeVars, key)
}
