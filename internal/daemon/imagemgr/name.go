package imagemgr

import (
	"fmt"
	"strings"

	"banger/internal/errdefs"
)

// MaxNameLen is the longest image or kernel name ValidateName accepts.
const MaxNameLen = 128

// ValidateName checks an image or kernel name: 1 to 128 characters, the
// first a letter or digit, the rest letters, digits, '.', '_', ':' or '-'
// ("debian:bookworm" is a name; "library/debian" is not). The error wraps
// errdefs.ErrInvalidArgument and says which rule the name breaks.
func ValidateName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("invalid name %q: it is empty: %w", name, errdefs.ErrInvalidArgument)
	case len(name) > MaxNameLen:
		return fmt.Errorf("invalid name %q: it is %d bytes long, the limit is %d: %w",
			name, len(name), MaxNameLen, errdefs.ErrInvalidArgument)
	case !isAlnum(name[0]):
		return fmt.Errorf("invalid name %q: it must start with a letter or a digit: %w",
			name, errdefs.ErrInvalidArgument)
	}
	for i := 1; i < len(name); i++ {
		if !isNameByte(name[i]) {
			return fmt.Errorf("invalid name %q: byte %q at offset %d is not allowed (use letters, digits, '.', '_', ':' and '-'): %w",
				name, name[i], i, errdefs.ErrInvalidArgument)
		}
	}
	return nil
}

// DefaultName derives an image name from an image reference: the last
// path component of the repository, without the registry host, with its
// tag ("127.0.0.1:5000/library/debian:bookworm" gives "debian:bookworm"),
// or, for a reference pinned only by digest, with the digest's first 12
// hex digits ("debian@sha256:ab…" gives "debian-ab…"). Characters a name
// may not hold become '-'. The result always passes ValidateName.
func DefaultName(ref string) string {
	s := strings.TrimSpace(ref)
	var digest string
	if i := strings.LastIndexByte(s, '@'); i >= 0 {
		s, digest = s[:i], s[i+1:]
	}
	// The registry host is the first component when it looks like one
	// (the rule Docker uses): it holds a '.' or a ':' or is "localhost".
	if first, rest, ok := strings.Cut(s, "/"); ok && (strings.ContainsAny(first, ".:") || first == "localhost") {
		s = rest
	}
	if i := strings.LastIndexByte(s, '/'); i >= 0 {
		s = s[i+1:]
	}
	repo, tag, _ := strings.Cut(s, ":")
	name := repo
	switch {
	case tag != "":
		name = repo + ":" + tag
	case digest != "":
		_, hex, ok := strings.Cut(digest, ":")
		if !ok {
			hex = digest
		}
		name = repo + "-" + hex[:min(len(hex), 12)]
	}
	return sanitizeName(name)
}

// sanitizeName maps s onto the name alphabet: disallowed bytes become '-',
// leading bytes that are not letters or digits are dropped, the result is
// cut to MaxNameLen, and an empty result becomes "image".
func sanitizeName(s string) string {
	b := []byte(s)
	for i := range b {
		if !isNameByte(b[i]) {
			b[i] = '-'
		}
	}
	start := 0
	for start < len(b) && !isAlnum(b[start]) {
		start++
	}
	b = b[start:]
	if len(b) > MaxNameLen {
		b = b[:MaxNameLen]
	}
	if len(b) == 0 {
		return "image"
	}
	return string(b)
}

func isAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}

func isNameByte(c byte) bool {
	return isAlnum(c) || c == '.' || c == '_' || c == ':' || c == '-'
}
