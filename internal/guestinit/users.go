package guestinit

import (
	"bufio"
	"bytes"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// guestUser is who a process runs as, resolved from the guest's
// /etc/passwd and /etc/group.
type guestUser struct {
	Name   string // "" for a uid the passwd file does not know
	UID    uint32
	GID    uint32
	Groups []uint32 // supplementary groups, the primary one first
	Home   string
	Shell  string // "" when passwd does not say
}

type passwdEntry struct {
	name        string
	uid, gid    uint32
	home, shell string
}

type groupEntry struct {
	name    string
	gid     uint32
	members []string
}

// parsePasswd parses passwd(5) data, skipping lines it cannot read.
func parsePasswd(data []byte) []passwdEntry {
	var out []passwdEntry
	eachLine(data, 7, func(f []string) {
		uid, err1 := parseID(f[2])
		gid, err2 := parseID(f[3])
		if err1 != nil || err2 != nil || f[0] == "" {
			return
		}
		out = append(out, passwdEntry{name: f[0], uid: uid, gid: gid, home: f[5], shell: f[6]})
	})
	return out
}

// parseGroup parses group(5) data, skipping lines it cannot read.
func parseGroup(data []byte) []groupEntry {
	var out []groupEntry
	eachLine(data, 4, func(f []string) {
		gid, err := parseID(f[2])
		if err != nil || f[0] == "" {
			return
		}
		var members []string
		for _, m := range strings.Split(f[3], ",") {
			if m = strings.TrimSpace(m); m != "" {
				members = append(members, m)
			}
		}
		out = append(out, groupEntry{name: f[0], gid: gid, members: members})
	})
	return out
}

// eachLine calls fn with the colon-separated fields of each line that has
// exactly n of them, skipping comments and blank lines.
func eachLine(data []byte, n int, fn func([]string)) {
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		if f := strings.Split(line, ":"); len(f) == n {
			fn(f)
		}
	}
}

func parseID(s string) (uint32, error) {
	n, err := strconv.ParseUint(s, 10, 32)
	return uint32(n), err
}

// resolveUser resolves spec — "", "NAME", "UID", "NAME:GROUP", "UID:GID"
// (GROUP a name or a gid) — against passwd and group data. "" is root.
// A uid the passwd file does not know runs with gid 0 and home "/", as
// container runtimes do. Supplementary groups are those group lists the
// user's name in, plus the primary group.
func resolveUser(spec string, passwd, group []byte) (guestUser, error) {
	users, groups := parsePasswd(passwd), parseGroup(group)
	userPart, groupPart, hasGroup := strings.Cut(spec, ":")
	if userPart == "" {
		if hasGroup {
			return guestUser{}, fmt.Errorf("user %q: no user before the colon", spec)
		}
		userPart = "0"
	}
	var u guestUser
	if uid, err := parseID(userPart); err == nil {
		u = guestUser{UID: uid, Home: "/"}
		for _, e := range users {
			if e.uid == uid {
				u = fromPasswd(e)
				break
			}
		}
	} else {
		found := false
		for _, e := range users {
			if e.name == userPart {
				u, found = fromPasswd(e), true
				break
			}
		}
		if !found {
			return guestUser{}, fmt.Errorf("user %q: no such user in the guest's /etc/passwd", userPart)
		}
	}
	if hasGroup {
		gid, err := parseID(groupPart)
		if err != nil {
			found := false
			for _, g := range groups {
				if g.name == groupPart {
					gid, found = g.gid, true
					break
				}
			}
			if !found {
				return guestUser{}, fmt.Errorf("group %q: no such group in the guest's /etc/group", groupPart)
			}
		}
		u.GID = gid
	}
	u.Groups = []uint32{u.GID}
	if u.Name != "" {
		for _, g := range groups {
			if g.gid != u.GID && slices.Contains(g.members, u.Name) {
				u.Groups = append(u.Groups, g.gid)
			}
		}
	}
	return u, nil
}

func fromPasswd(e passwdEntry) guestUser {
	home := e.home
	if home == "" {
		home = "/"
	}
	return guestUser{Name: e.name, UID: e.uid, GID: e.gid, Home: home, Shell: e.shell}
}
