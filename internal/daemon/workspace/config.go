package workspace

import (
	"bytes"
	"context"
	"fmt"
	"net/url"
	"strings"
)

// sanitizeConfig returns the guest's copy of the git config file at path:
// only the settings that decide how git reads the repository and compares
// the work tree (so git status in the guest says what it says on the
// host), plus remotes and branch tracking with any credentials removed
// from URLs. Everything else is dropped: hooks paths, fsmonitor, filter,
// credential, alias, include and url rewrite settings could run host
// programs or leak secrets into the guest. With userConf, the effective
// user.name and user.email (from any config level) are added so the guest
// can commit as the host user.
func sanitizeConfig(ctx context.Context, g Git, path string, userConf bool, workDir string) ([]byte, error) {
	out, err := output(ctx, g, "/", nil, "config", "-z", "--file", path, "--list")
	if err != nil {
		return nil, err
	}
	var kept [][2]string
	for _, rec := range splitNUL(out) {
		key, val, hasVal := strings.Cut(rec, "\n")
		if !hasVal {
			val = "true" // a bare key is a true boolean
		}
		if v, ok := keepConfig(strings.ToLower(key), key, val); ok {
			kept = append(kept, [2]string{key, v})
		}
	}
	if userConf {
		for _, k := range []string{"user.name", "user.email"} {
			v, err := line(ctx, g, workDir, nil, "config", "--get", k)
			if err == nil && v != "" {
				kept = append(kept, [2]string{k, v})
			}
		}
	}
	return writeConfig(kept), nil
}

// keepConfig says whether a key (lower-cased in lk) goes to the guest, and
// with which value.
func keepConfig(lk, key, val string) (string, bool) {
	section, rest, _ := strings.Cut(lk, ".")
	name := rest[strings.LastIndex(rest, ".")+1:]
	switch section {
	case "extensions":
		return val, true
	case "core":
		switch name {
		case "repositoryformatversion", "filemode", "symlinks", "ignorecase", "precomposeunicode",
			"autocrlf", "eol", "safecrlf", "bare", "logallrefupdates", "checkstat", "trustctime",
			"quotepath", "worktree", "abbrev", "splitindex", "sparsecheckout", "sparsecheckoutcone":
			return val, true
		}
	case "index":
		return val, name == "version" || name == "sparse"
	case "remote":
		switch name {
		case "url", "pushurl":
			return stripCredentials(val), true
		case "fetch":
			return val, true
		}
	case "branch":
		return val, name == "remote" || name == "merge"
	case "submodule":
		switch name {
		case "url":
			return stripCredentials(val), true
		case "active", "path":
			return val, true
		}
	case "init":
		return val, name == "defaultbranch"
	}
	_ = key
	return "", false
}

// stripCredentials removes a password (or token) from a URL.
func stripCredentials(v string) string {
	u, err := url.Parse(v)
	if err != nil || u.User == nil {
		return v
	}
	if _, has := u.User.Password(); has {
		u.User = url.User(u.User.Username())
	}
	return u.String()
}

// writeConfig renders keys ("section.sub.sect.name" or "section.name") as
// a git config file.
func writeConfig(kv [][2]string) []byte {
	var b bytes.Buffer
	last := ""
	for _, p := range kv {
		key, val := p[0], p[1]
		section, rest, _ := strings.Cut(key, ".")
		sub, name := "", rest
		if i := strings.LastIndex(rest, "."); i >= 0 {
			sub, name = rest[:i], rest[i+1:]
		}
		head := "[" + section + "]"
		if sub != "" || strings.Contains(rest, ".") {
			head = fmt.Sprintf("[%s %s]", section, quoteConfig(sub))
		}
		if head != last {
			b.WriteString(head + "\n")
			last = head
		}
		fmt.Fprintf(&b, "\t%s = %s\n", name, quoteConfig(val))
	}
	return b.Bytes()
}

// quoteConfig quotes a value or subsection name for a git config file.
func quoteConfig(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`, "\t", `\t`)
	return `"` + r.Replace(s) + `"`
}
