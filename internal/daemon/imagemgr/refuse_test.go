package imagemgr

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"banger/internal/errdefs"
)

// escapee is the name every refused entry tries to write outside the
// root; assertUntouched looks for it above and beside the root.
const escapee = "banger-escapee"

func TestFlattenRefuses(t *testing.T) {
	requireRoot(t)
	tests := []struct {
		name  string
		lower []ent // applied first, must succeed
		layer []ent // must be refused
		entry string
		msg   string
	}{
		{name: "dotdot", layer: []ent{file("../"+escapee, "x")}, entry: "../" + escapee, msg: "leaves the image root"},
		{name: "dotdot inside", layer: []ent{file("a/../../"+escapee, "x")}, entry: "a/../../" + escapee, msg: "leaves the image root"},
		{name: "dotdot into canary", layer: []ent{file("../canary/keep", "pwned")}, entry: "../canary/keep", msg: "leaves the image root"},
		{name: "absolute", layer: []ent{file("/"+escapee, "x")}, entry: "/" + escapee, msg: "absolute path"},
		{name: "absolute dir", layer: []ent{dirEnt("/tmp/" + escapee + "/")}, entry: "/tmp/" + escapee + "/", msg: "absolute path"},
		{
			name:  "symlink climbing out",
			layer: []ent{symlink("l", "../../.."), file("l/"+escapee, "x")},
			entry: "l/" + escapee, msg: `through symlink "l" -> "../../.."`,
		},
		{
			name:  "symlink to the canary",
			layer: []ent{symlink("l", "../canary"), file("l/keep", "pwned")},
			entry: "l/keep", msg: "leaves the image root",
		},
		{
			name:  "symlink planted by a lower layer",
			lower: []ent{symlink("evil2", "../../../../etc")},
			layer: []ent{file("evil2/"+escapee, "x")},
			entry: "evil2/" + escapee, msg: "leaves the image root",
		},
		{
			name:  "symlink chain climbing out",
			layer: []ent{symlink("a", "b"), symlink("b", "../.."), file("a/"+escapee, "x")},
			entry: "a/" + escapee, msg: `through symlink "b" -> "../.."`,
		},
		{
			name:  "symlink chain through an absolute target",
			layer: []ent{dirEnt("d/"), symlink("d/up", "/d/../.."), file("d/up/"+escapee, "x")},
			entry: "d/up/" + escapee, msg: "leaves the image root",
		},
		{
			name:  "symlink loop",
			layer: []ent{symlink("a", "b"), symlink("b", "a"), file("a/x", "x")},
			entry: "a/x", msg: "more than 40 symlinks",
		},
		{name: "hardlink climbing out", layer: []ent{hardlink("h", "../../etc/passwd")}, entry: "h", msg: "leaves the image root"},
		{name: "hardlink to the canary", layer: []ent{hardlink("h", "../canary/keep")}, entry: "h", msg: "leaves the image root"},
		{name: "hardlink absolute", layer: []ent{hardlink("h", "/etc/passwd")}, entry: "h", msg: "absolute path"},
		{name: "hardlink to a missing file", layer: []ent{hardlink("h", "later"), file("later", "x")}, entry: "h", msg: "not present"},
		{name: "hardlink to a directory", layer: []ent{dirEnt("d/"), hardlink("h", "d")}, entry: "h", msg: "is a directory"},
		{name: "hardlink to the root", layer: []ent{hardlink("h", "./")}, entry: "h", msg: "image root"},
		{
			name:  "hardlink through a symlink climbing out",
			layer: []ent{symlink("l", "../.."), hardlink("h", "l/"+baseName()+"/canary/keep")},
			entry: "h", msg: "leaves the image root",
		},
		{name: "whiteout climbing out", layer: []ent{whiteout("../.wh.canary")}, entry: "../.wh.canary", msg: "leaves the image root"},
		{
			name:  "whiteout through a symlink climbing out",
			lower: []ent{symlink("l", "..")},
			layer: []ent{whiteout("l/.wh.canary")},
			entry: "l/.wh.canary", msg: "leaves the image root",
		},
		{
			name:  "opaque marker through a symlink climbing out",
			lower: []ent{symlink("l", "../canary")},
			layer: []ent{whiteout("l/.wh..wh..opq")},
			entry: "l/.wh..wh..opq", msg: "leaves the image root",
		},
		{name: "whiteout of dotdot", layer: []ent{whiteout(".wh..")}, entry: ".wh..", msg: "names no file"},
		{name: "whiteout as a directory", layer: []ent{file(".wh.x/y", "")}, entry: ".wh.x/y", msg: "used as a directory"},
		{name: "empty name", layer: []ent{file("", "x")}, entry: "", msg: "empty name"},
		{name: "name of dots only", layer: []ent{file("./.", "x")}, entry: "./.", msg: "image root can only be a directory"},
		{name: "parent is a file", layer: []ent{file("f", "x"), file("f/"+escapee, "x")}, entry: "f/" + escapee, msg: "not a directory"},
		{name: "unknown type", layer: []ent{{hdr: hdr("vol", 'V', 0)}}, entry: "vol", msg: "unsupported entry type"},
		{name: "uid out of range", layer: []ent{file("u", "").owner(-5, 0)}, entry: "u", msg: "out of range"},
		{name: "empty symlink target", layer: []ent{symlink("s", "")}, entry: "s", msg: "empty target"},
	}
	fds := countFDs(t)
	defer func() {
		if n := countFDs(t); n != fds {
			t.Errorf("%d descriptors open after the refusals, %d before", n, fds)
		}
	}()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStage(t)
			layers := [][]byte{layer(t, tt.layer...)}
			if tt.lower != nil {
				layers = [][]byte{layer(t, tt.lower...), layers[0]}
			}
			_, err := flatten(t, s.root, layers...)
			assertRefused(t, err, len(layers), tt.entry, tt.msg)
			s.assertUntouched(t, escapee)
		})
	}
}

func countFDs(t *testing.T) int {
	t.Helper()
	es, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(es)
}

// baseName is a stand-in the symlink cases cannot know in advance: any
// name works, since resolution is refused before it is looked up.
func baseName() string { return "staging" }

func assertRefused(t *testing.T, err error, layerNum int, entry, msg string) {
	t.Helper()
	if err == nil {
		t.Fatal("layer applied, want it refused")
	}
	if !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("err = %v, want errdefs.ErrInvalidArgument", err)
	}
	var ee *EntryError
	if !errors.As(err, &ee) || ee.Entry != entry || ee.Layer != layerNum {
		t.Errorf("err = %#v, want an *EntryError for layer %d entry %q", err, layerNum, entry)
	}
	prefix := fmt.Sprintf("layer %d (sha256:layer%d): entry %q: ", layerNum, layerNum, entry)
	if !strings.HasPrefix(err.Error(), prefix) || !strings.Contains(err.Error(), msg) {
		t.Errorf("err = %q, want it to start %q and say %q", err, prefix, msg)
	}
}

func TestFlattenRefusesHardlinkEscapeKeepsTargetAlone(t *testing.T) {
	requireRoot(t)
	var before, after unix.Stat_t
	if err := unix.Stat("/etc/passwd", &before); err != nil {
		t.Skip("no /etc/passwd to guard")
	}
	s := newStage(t)
	_, err := flatten(t, s.root, layer(t, symlink("l", "../../../../.."), hardlink("h", "l/etc/passwd")))
	assertRefused(t, err, 1, "h", "leaves the image root")
	unix.Stat("/etc/passwd", &after)
	if after.Nlink != before.Nlink {
		t.Errorf("/etc/passwd gained a link: %d -> %d", before.Nlink, after.Nlink)
	}
	assertMissing(t, s.path("h"))
}

// Go's tar reader stops NUL bytes in names itself (a PAX path with a NUL
// is a malformed header); the Flattener refuses both that and a header
// that carries one anyway.
func TestFlattenRefusesNUL(t *testing.T) {
	requireRoot(t)
	t.Run("in the stream", func(t *testing.T) {
		s := newStage(t)
		long := strings.Repeat("n", 120) + "X" + escapee
		raw := layer(t, file(long, "x"))
		i := bytes.Index(raw, []byte("path="+long))
		if i < 0 {
			t.Fatal("no PAX path record to corrupt")
		}
		raw[i+len("path=")+120] = 0
		_, err := flatten(t, s.root, raw)
		if err == nil || !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "layer 1 (sha256:layer1)") {
			t.Errorf("err = %v, want a malformed-tar refusal naming the layer", err)
		}
		s.assertUntouched(t, escapee)
		if names := listDir(t, s.root); len(names) != 0 {
			t.Errorf("root holds %q", names)
		}
	})
	for _, h := range []tar.Header{
		{Name: "a\x00b", Typeflag: tar.TypeReg},
		{Name: "h", Typeflag: tar.TypeLink, Linkname: "a\x00b"},
		{Name: "s", Typeflag: tar.TypeSymlink, Linkname: "a\x00b"},
	} {
		t.Run("in "+h.Name, func(t *testing.T) {
			s := newStage(t)
			f, err := NewFlattener(s.root)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			err = f.applyEntry(&h, strings.NewReader(""))
			if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "NUL") {
				t.Errorf("err = %v, want a NUL refusal", err)
			}
		})
	}
}
