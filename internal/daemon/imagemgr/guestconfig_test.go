package imagemgr

import (
	"encoding/json"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestWriteGuestConfig(t *testing.T) {
	requireRoot(t)
	s := newStage(t)
	// An image that planted its own /.banger/image.json as a symlink out
	// of the root: PrepareGuestRoot makes /.banger ours, and the write
	// replaces the link rather than following it.
	if err := os.MkdirAll(filepath.Join(s.root, ".banger"), 0o755); err != nil {
		t.Fatal(err)
	}
	outside := filepath.Join(filepath.Dir(s.root), "outside.json")
	if err := os.Symlink(outside, filepath.Join(s.root, ".banger", "image.json")); err != nil {
		t.Fatal(err)
	}
	if err := PrepareGuestRoot(s.root, fakeInit(t)); err != nil {
		t.Fatal(err)
	}
	cfg := ImageConfig{Entrypoint: []string{"/app", "--flag"}, Cmd: []string{"serve"}, Env: []string{"A=1", "PATH=/bin"}, WorkingDir: "/srv", User: "1000:1000"}
	if err := WriteGuestConfig(s.root, cfg); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(s.root, ".banger", "image.json")
	fi, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o644 || st.Uid != 0 || st.Gid != 0 {
		t.Fatalf("image.json is %v %d:%d, want a regular 0644 root:root file", fi.Mode(), st.Uid, st.Gid)
	}
	if _, err := os.Lstat(outside); !os.IsNotExist(err) {
		t.Fatalf("the write followed the image's symlink out of the root (%v)", err)
	}
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(data, &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"entrypoint":  []any{"/app", "--flag"},
		"cmd":         []any{"serve"},
		"env":         []any{"A=1", "PATH=/bin"},
		"working_dir": "/srv",
		"user":        "1000:1000",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("image.json (-want +got):\n%s", diff)
	}
}
