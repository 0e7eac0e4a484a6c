package guestinit

import (
	"archive/tar"
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// deletionsTar is an archive holding only a deletion list.
func deletionsTar(t *testing.T, paths ...string) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	body := strings.Join(paths, "\x00")
	hdr := &tar.Header{Typeflag: tar.TypeReg, Name: ".banger-deletions", Mode: 0o600, Size: int64(len(body)),
		Format: tar.FormatPAX, PAXRecords: map[string]string{DeletionsRecord: "1"}}
	if err := tw.WriteHeader(hdr); err != nil {
		t.Fatal(err)
	}
	tw.Write([]byte(body))
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestExtractTarDeletions(t *testing.T) {
	dest := t.TempDir()
	for _, f := range []string{"keep", "gone", "a/b/c/gone", "d/gone", "d/keep", "tree/x/y", "link-target/f"} {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dest, f)), 0o755); err != nil {
			t.Fatal(err)
		}
		writeTestFile(t, filepath.Join(dest, f), f)
	}
	if err := os.Symlink("link-target", filepath.Join(dest, "l")); err != nil {
		t.Fatal(err)
	}
	stream := deletionsTar(t, "gone", "a/b/c/gone", "d/gone", "tree", "l/f", "never-existed")
	if err := extractTar(bytes.NewReader(stream), dest, os.Geteuid(), os.Getegid()); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"gone", "a", "d/gone", "tree", "link-target/f", ".banger-deletions"} {
		if _, err := os.Lstat(filepath.Join(dest, p)); err == nil {
			t.Errorf("%s still there", p)
		}
	}
	for _, p := range []string{"keep", "d/keep", "l", "link-target"} {
		if _, err := os.Lstat(filepath.Join(dest, p)); err != nil {
			t.Errorf("%s: %v", p, err)
		}
	}
}

func TestExtractTarDeletionsHostile(t *testing.T) {
	tests := []struct {
		name    string
		path    func(base string) string
		wantErr string
	}{
		{"dotdot", func(string) string { return "../outside/secret" }, "refused"},
		{"absolute", func(base string) string { return base + "/outside/secret" }, "refused"},
		{"dest itself", func(string) string { return "." }, "refused"},
		{"through a symlink", func(string) string { return "l/secret" }, "escapes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base := t.TempDir()
			outside, dest := filepath.Join(base, "outside"), filepath.Join(base, "dest")
			os.Mkdir(outside, 0o755)
			os.Mkdir(dest, 0o755)
			writeTestFile(t, filepath.Join(outside, "secret"), "secret")
			if err := os.Symlink(outside, filepath.Join(dest, "l")); err != nil {
				t.Fatal(err)
			}
			err := extractTar(bytes.NewReader(deletionsTar(t, tt.path(base))), dest, os.Geteuid(), os.Getegid())
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("err = %v, want one holding %q", err, tt.wantErr)
			}
			if readFile(t, filepath.Join(outside, "secret")) != "secret" {
				t.Error("outside/secret changed")
			}
			if _, err := os.Stat(dest); err != nil {
				t.Errorf("dest: %v", err)
			}
		})
	}
}

// The extractor remembers the directories it made; one deleted, or a
// file replaced, in the same stream is made again rather than assumed.
func TestExtractTarRemadeAfterDeletion(t *testing.T) {
	dest := t.TempDir()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	file := func(name, body string) {
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(body))})
		tw.Write([]byte(body))
	}
	file("d/e/x", "one")
	body := "d"
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: ".banger-deletions", Mode: 0o600, Size: int64(len(body)),
		Format: tar.FormatPAX, PAXRecords: map[string]string{DeletionsRecord: "1"}})
	tw.Write([]byte(body))
	file("d/e/y", "two")
	file("d/e/y", "three") // a name again: the first is replaced
	tw.Close()
	if err := extractTar(&buf, dest, os.Getuid(), os.Getgid()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dest, "d/e/x")); !os.IsNotExist(err) {
		t.Errorf("d/e/x survived its directory's deletion: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(dest, "d/e/y")); err != nil || string(b) != "three" {
		t.Errorf("d/e/y = %q, %v; want the last one written", b, err)
	}
}
