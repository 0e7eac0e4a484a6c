package workspace

import (
	"encoding/base64"
	"encoding/json"
	"io/fs"
	"slices"
	"strings"
	"unicode/utf8"
)

// Manifest is what a Pack put in the guest: the base commit and every
// entry, sorted by path. Give it back to the next Pack to send only what
// changed, and to Export as the base of the branch.
type Manifest struct {
	// Base is the commit the checkout was at ("" for a plain directory or
	// an unborn branch): exports commit on top of it.
	Base string `json:"base"`
	// ObjectFormat of the repository ("sha1", "sha256"; "" if not git).
	ObjectFormat string  `json:"object_format,omitempty"`
	Entries      []Entry `json:"entries"`
	// Stats describes the Pack that made this manifest; not persisted.
	Stats PackStats `json:"-"`
}

// Entry is one file or symlink in the guest, named relative to the
// workspace root with "/" separators (".git/..." for the git part).
type Entry struct {
	Path string
	// Mode is the permission bits of a regular file, fs.ModeSymlink|0o777
	// for a symlink, or fs.ModeDir|perm for the empty directory of an
	// uninitialised submodule (Size 0, no hash).
	Mode fs.FileMode
	// Size in bytes (a symlink's: its target's length).
	Size int64
	// SHA256 of the content (a symlink's: of its target), hex.
	SHA256 string
	// Stat is the host file's identity when it was hashed: an unchanged
	// stat means an unchanged file, as git's index assumes.
	Stat StatKey
}

// StatKey is what Pack compares to skip re-reading an unchanged file.
type StatKey struct {
	Ino, Dev uint64
	MtimeNs  int64
	CtimeNs  int64
}

// PackStats counts what a Pack did.
type PackStats struct {
	Files     int   // entries in the manifest
	Sent      int   // entries written to the stream
	SentBytes int64 // content bytes among them
	Deleted   int   // paths the guest is told to delete
	Hashed    int64 // bytes read to hash (stat cache misses)
	// PacksRebuilt packs were sent in transfer form (GitPackRecord), with
	// BlobsRebuilt blobs among them taken from work-tree files.
	PacksRebuilt int
	BlobsRebuilt int
}

// Lookup returns the entry for path.
func (m *Manifest) Lookup(path string) (Entry, bool) {
	if m == nil {
		return Entry{}, false
	}
	i, ok := slices.BinarySearchFunc(m.Entries, path, func(e Entry, p string) int { return strings.Compare(e.Path, p) })
	if !ok {
		return Entry{}, false
	}
	return m.Entries[i], true
}

// entryJSON is Entry on the wire: a path that is not UTF-8 (file names are
// bytes) is carried base64-encoded in path_b64, so JSON cannot mangle it.
type entryJSON struct {
	Path    string  `json:"path,omitempty"`
	PathB64 string  `json:"path_b64,omitempty"`
	Mode    uint32  `json:"mode"`
	Size    int64   `json:"size"`
	SHA256  string  `json:"sha256"`
	Stat    StatKey `json:"stat"`
}

// MarshalJSON keeps non-UTF-8 names intact.
func (e Entry) MarshalJSON() ([]byte, error) {
	j := entryJSON{Mode: uint32(e.Mode), Size: e.Size, SHA256: e.SHA256, Stat: e.Stat}
	if utf8.ValidString(e.Path) {
		j.Path = e.Path
	} else {
		j.PathB64 = base64.StdEncoding.EncodeToString([]byte(e.Path))
	}
	return json.Marshal(j)
}

// UnmarshalJSON reverses MarshalJSON.
func (e *Entry) UnmarshalJSON(b []byte) error {
	var j entryJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*e = Entry{Path: j.Path, Mode: fs.FileMode(j.Mode), Size: j.Size, SHA256: j.SHA256, Stat: j.Stat}
	if j.PathB64 != "" {
		p, err := base64.StdEncoding.DecodeString(j.PathB64)
		if err != nil {
			return err
		}
		e.Path = string(p)
	}
	return nil
}
