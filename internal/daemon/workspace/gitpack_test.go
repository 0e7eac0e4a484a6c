package workspace

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"banger/internal/guestinit"
)

// packedRepo is a gc'd checkout with history: files changed over several
// commits, so its pack holds HEAD's blobs whole and older versions as
// deltas against them; a file with the same content twice; a dirty file
// (its HEAD blob is not in the work tree); a file in a subdirectory with a
// weird name.
func packedRepo(t *testing.T, g Git) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "repo")
	os.Mkdir(dir, 0o755)
	run(t, g, dir, "init", "-q", "-b", "main")
	body := func(i, v int) string {
		var b strings.Builder
		for l := 0; l < 500; l++ {
			fmt.Fprintf(&b, "file %d line %d: some text that repeats %d\n", i, l, l%7)
			if l == 100 {
				fmt.Fprintf(&b, "version %d\n", v)
			}
		}
		return b.String()
	}
	for v := 0; v < 4; v++ {
		for i := 0; i < 30; i++ {
			write(t, dir, fmt.Sprintf("src/f%02d.txt", i), body(i, v), 0o644)
		}
		write(t, dir, "d/with space\nand newline", body(99, v), 0o755)
		write(t, dir, "big", strings.Repeat(body(7, v), 40), 0o644) // over one zlib stored block
		write(t, dir, "same-a", "same content\n", 0o644)
		write(t, dir, "same-b", "same content\n", 0o644)
		run(t, g, dir, "add", "-A")
		run(t, g, dir, "commit", "-q", "-m", fmt.Sprintf("v%d", v))
	}
	run(t, g, dir, "gc", "-q")
	write(t, dir, "src/f03.txt", "dirty now\n", 0o644)
	return dir
}

// TestPackRebuildsGitPack: the pack goes in transfer form, its HEAD blobs
// taken from the work-tree files, and the guest's repository is whole:
// fsck, verify-pack, log -p and status agree with the host.
func TestPackRebuildsGitPack(t *testing.T) {
	g := testGit(t)
	dir := packedRepo(t, g)
	repo, err := Inspect(context.Background(), g, dir)
	if err != nil {
		t.Fatal(err)
	}
	packs, _ := filepath.Glob(filepath.Join(dir, ".git/objects/pack/pack-*.pack"))
	if len(packs) != 1 {
		t.Fatalf("packs %v, want one", packs)
	}
	fi, _ := os.Stat(packs[0])

	var buf bytes.Buffer
	m, err := Pack(context.Background(), g, repo, &buf, nil)
	if err != nil {
		t.Fatal(err)
	}
	// 30 files, big and the weird one of HEAD, plus same-a/same-b's blob,
	// minus the dirty f03.
	if m.Stats.PacksRebuilt != 1 || m.Stats.BlobsRebuilt != 32 {
		t.Errorf("stats %+v, want 1 pack rebuilt with 32 blobs from files", m.Stats)
	}
	pe, _ := m.Lookup(".git/objects/pack/" + filepath.Base(packs[0]))
	sent := packEntrySize(t, buf.Bytes(), pe.Path)
	if pe.Size != fi.Size() || sent >= fi.Size() {
		t.Errorf("pack: manifest size %d (file %d), sent %d bytes, want fewer than the file", pe.Size, fi.Size(), sent)
	}

	guest := filepath.Join(t.TempDir(), "ws")
	if err := guestinit.Untar(bytes.NewReader(buf.Bytes()), guest); err != nil {
		t.Fatal(err)
	}
	gpacks, _ := filepath.Glob(filepath.Join(guest, ".git/objects/pack/*"))
	if len(gpacks) != 2 { // the pack and its index, no temporary left
		t.Errorf("guest pack directory: %v", gpacks)
	}
	run(t, g, guest, "fsck", "--full", "--strict", "--no-dangling")
	run(t, g, guest, "verify-pack", strings.TrimSuffix(gpacks[0], ".idx")+".idx")
	for _, args := range [][]string{{"log", "-p", "--all"}, {"status", "--porcelain"}, {"diff", "HEAD~2"}} {
		if h, gu := run(t, g, dir, args...), run(t, g, guest, args...); h != gu {
			t.Errorf("git %v differs:\nhost:\n%.2000s\nguest:\n%.2000s", args, h, gu)
		}
	}

	// An incremental import whose index changed (chmod changes its
	// ctime) sends the pack again with it: the guest's index is its own.
	idx := strings.TrimSuffix(packs[0], ".pack") + ".idx"
	os.Chmod(idx, 0o440)
	write(t, dir, "src/f05.txt", "changed too\n", 0o644)
	buf.Reset()
	m2, err := Pack(context.Background(), g, repo, &buf, m)
	if err != nil {
		t.Fatal(err)
	}
	if err := guestinit.Untar(bytes.NewReader(buf.Bytes()), guest); err != nil {
		t.Fatal(err)
	}
	if m2.Stats.Sent != 3 { // f05, the index and its pack
		t.Errorf("incremental stats %+v, want 3 sent", m2.Stats)
	}
	run(t, g, guest, "fsck", "--full", "--strict", "--no-dangling")
	if h, gu := run(t, g, dir, "status", "--porcelain"), run(t, g, guest, "status", "--porcelain"); h != gu {
		t.Errorf("status after the incremental import: host %q, guest %q", h, gu)
	}
}

// packEntrySize is the size of name's entry in a tar stream, which must
// carry GitPackRecord.
func packEntrySize(t *testing.T, b []byte, name string) int64 {
	t.Helper()
	for _, h := range tarHeaders(t, b) {
		if h.Name == name {
			if h.PAXRecords[GitPackRecord] != "1" {
				t.Errorf("%s sent without %s", name, GitPackRecord)
			}
			return h.Size
		}
	}
	t.Fatalf("%s not in the stream", name)
	return 0
}

// tarHeaders lists a tar stream's headers.
func tarHeaders(t *testing.T, b []byte) []*tar.Header {
	t.Helper()
	var hs []*tar.Header
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return hs
		}
		if err != nil {
			t.Fatal(err)
		}
		hs = append(hs, h)
	}
}

// TestPackWithoutGitPacks: for a guest that did not say it rebuilds packs,
// the pack and its index go as they are.
func TestPackWithoutGitPacks(t *testing.T) {
	g := testGit(t)
	dir := packedRepo(t, g)
	repo, err := Inspect(context.Background(), g, dir)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	m, err := PackWith(context.Background(), g, repo, &buf, nil, PackOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if m.Stats.PacksRebuilt != 0 {
		t.Errorf("stats %+v, want no pack rebuilt", m.Stats)
	}
	var packs []string
	for _, h := range tarHeaders(t, buf.Bytes()) {
		if h.PAXRecords[GitPackRecord] != "" {
			t.Errorf("%s sent in transfer form", h.Name)
		}
		if strings.HasPrefix(h.Name, ".git/objects/pack/pack-") {
			packs = append(packs, h.Name)
		}
	}
	if len(packs) != 2 {
		t.Errorf("pack files sent: %q, want the pack and its index", packs)
	}
	guest := filepath.Join(t.TempDir(), "ws")
	if err := guestinit.Untar(bytes.NewReader(buf.Bytes()), guest); err != nil {
		t.Fatal(err)
	}
	run(t, g, guest, "fsck", "--full", "--strict", "--no-dangling")
}
