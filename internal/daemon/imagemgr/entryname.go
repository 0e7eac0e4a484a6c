package imagemgr

import "strings"

// splitName turns a tar entry name or hardlink target into clean
// components below the root. Absolute names, names with a NUL byte, empty
// names and names whose ".." climbs above the root are refused; "." and
// empty components are dropped and ".." is applied to the name's text
// (as containerd and Docker do). The root itself is an empty slice.
func splitName(name string) ([]string, error) {
	switch {
	case name == "":
		return nil, refuse("empty name")
	case strings.IndexByte(name, 0) >= 0:
		return nil, refuse("name holds a NUL byte")
	case strings.HasPrefix(name, "/"):
		return nil, refuse("absolute path (layer entries are relative to the image root)")
	case len(name) > maxPathLen:
		return nil, refuse("name is longer than %d bytes", maxPathLen)
	}
	var out []string
	for _, c := range strings.Split(name, "/") {
		switch c {
		case "", ".":
		case "..":
			if len(out) == 0 {
				return nil, refuse("path leaves the image root")
			}
			out = out[:len(out)-1]
		default:
			if len(c) > maxNameLen {
				return nil, refuse("component is longer than %d bytes", maxNameLen)
			}
			out = append(out, c)
		}
	}
	return out, nil
}
