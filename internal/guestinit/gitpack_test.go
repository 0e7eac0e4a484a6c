package guestinit

import (
	"bytes"
	"compress/zlib"
	"crypto/sha1"
	"encoding/binary"
	"fmt"
	"hash"
	"hash/adler32"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// transfer builds a transfer form (see GitPackRecord) from records.
type transfer struct{ bytes.Buffer }

func newTransfer(count uint32) *transfer {
	t := &transfer{}
	t.WriteByte('H')
	t.WriteString("PACK")
	binary.Write(t, binary.BigEndian, uint32(2))
	binary.Write(t, binary.BigEndian, count)
	return t
}

func (t *transfer) uvarint(v uint64) { t.Write(binary.AppendUvarint(nil, v)) }

// raw adds entry as it is, n bytes in the host's pack.
func (t *transfer) raw(sha [20]byte, entry []byte) {
	t.WriteByte('R')
	t.Write(sha[:])
	t.uvarint(uint64(len(entry)))
	t.Write(entry)
}

// file adds a blob taken from the archive's file at path.
func (t *transfer) file(sha [20]byte, hostLen int, size int, adler uint32, path string) {
	t.WriteByte('F')
	t.Write(sha[:])
	t.uvarint(uint64(hostLen))
	t.uvarint(uint64(size))
	t.uvarint(uint64(adler))
	t.uvarint(uint64(len(path)))
	t.WriteString(path)
}

func (t *transfer) end() string { t.WriteByte('E'); return t.String() }

// object is a git object's name and its whole (non-delta) pack entry.
func object(typ byte, content string) ([20]byte, []byte) {
	name := sha1.Sum([]byte(fmt.Sprintf("%s %d\x00%s", map[byte]string{1: "commit", 2: "tree", 3: "blob"}[typ], len(content), content)))
	var e bytes.Buffer
	size := len(content)
	c := typ<<4 | byte(size&15)
	for size >>= 4; size != 0; size >>= 7 {
		e.WriteByte(c | 0x80)
		c = byte(size & 0x7f)
	}
	e.WriteByte(c)
	zw := zlib.NewWriter(&e)
	zw.Write([]byte(content))
	zw.Close()
	return name, e.Bytes()
}

// TestGitPackRebuilt: a pack whose blob comes from a file of the archive
// and whose tree is sent as it is ends up a pack git reads (verify-pack,
// cat-file), under its name, with its index and no temporary file.
func TestGitPackRebuilt(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("needs git (Debian package git) to read the pack back")
	}
	body := strings.Repeat("blob content from the work tree\n", 3000) // over one stored block
	blob, blobEntry := object(3, body)
	tree, treeEntry := object(2, "100644 a.txt\x00"+string(blob[:]))
	tf := newTransfer(2)
	tf.file(blob, len(blobEntry), len(body), adler32.Checksum([]byte(body)), "a.txt")
	tf.raw(tree, treeEntry)
	const pack = ".git/objects/pack/pack-0123456789abcdef0123456789abcdef01234567.pack"
	dest := filepath.Join(t.TempDir(), "ws")
	stream := makeTar(t, file("a.txt", body, 0o644), tarEntry{name: pack, typ: '0', mode: 0o444, body: tf.end(), gitpack: true})
	if err := extractTar(bytes.NewReader(stream), dest, os.Geteuid(), os.Getegid()); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(filepath.Join(dest, ".git/objects/pack"))
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if want := "pack-0123456789abcdef0123456789abcdef01234567.idx pack-0123456789abcdef0123456789abcdef01234567.pack"; strings.Join(names, " ") != want {
		t.Errorf("pack directory: %v, want %s", names, want)
	}
	git := func(args ...string) string {
		t.Helper()
		cmd := exec.Command("git", args...)
		cmd.Env = append(os.Environ(), "GIT_DIR="+filepath.Join(dest, ".git"), "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	os.MkdirAll(filepath.Join(dest, ".git/refs"), 0o755)
	os.WriteFile(filepath.Join(dest, ".git/HEAD"), []byte("ref: refs/heads/main\n"), 0o644)
	git("verify-pack", filepath.Join(dest, strings.TrimSuffix(pack, ".pack")+".idx"))
	if got := git("cat-file", "-p", fmt.Sprintf("%x", blob)); got != body {
		t.Errorf("blob read back: %d bytes, want %d", len(got), len(body))
	}
	if got := git("ls-tree", fmt.Sprintf("%x", tree)); !strings.Contains(got, fmt.Sprintf("blob %x\ta.txt", blob)) {
		t.Errorf("tree read back: %q", got)
	}
}

// TestGitPackRefused: a transfer form asking for what it may not, or not
// adding up, fails the extraction naming why, and leaves no pack, no
// index and no temporary file.
func TestGitPackRefused(t *testing.T) {
	body := "hello\n"
	blob, blobEntry := object(3, body)
	adler := adler32.Checksum([]byte(body))
	ofsDelta := []byte{6<<4 | 5, 0x7f, 0, 0, 0, 0, 0} // base 127 bytes back: not an entry
	tests := []struct {
		name, form, want string
	}{
		{"file not in the archive", func() string {
			tf := newTransfer(1)
			tf.file(blob, len(blobEntry), len(body), adler, "other.txt")
			return tf.end()
		}(), "not a file of this archive"},
		{"file outside", func() string {
			tf := newTransfer(1)
			tf.file(blob, len(blobEntry), len(body), adler, "../a.txt")
			return tf.end()
		}(), "not a file of this archive"},
		{"content changed", func() string {
			tf := newTransfer(1)
			tf.file(blob, len(blobEntry), len(body), adler+1, "a.txt")
			return tf.end()
		}(), "changed in the guest during the import"},
		{"size differs", func() string {
			tf := newTransfer(1)
			tf.file(blob, len(blobEntry), len(body)+1, adler, "a.txt")
			return tf.end()
		}(), "changed in the guest during the import"},
		{"delta base not an earlier entry", func() string {
			tf := newTransfer(1)
			tf.raw(blob, ofsDelta)
			return tf.end()
		}(), "delta base is not an earlier entry"},
		{"fewer objects than the header", func() string {
			tf := newTransfer(2)
			tf.raw(blob, blobEntry)
			return tf.end()
		}(), "1 objects, its header says 2"},
		{"more objects than the header", func() string {
			tf := newTransfer(1)
			tf.raw(blob, blobEntry)
			tf.raw(blob, blobEntry)
			return tf.end()
		}(), "more than the 1 objects"},
		{"unknown record", newTransfer(1).String() + "X", "unknown record"},
		{"no end", func() string {
			tf := newTransfer(1)
			tf.raw(blob, blobEntry)
			return tf.String()
		}(), "unexpected EOF"},
		{"data after the end", func() string {
			tf := newTransfer(1)
			tf.raw(blob, blobEntry)
			return tf.end() + "junk"
		}(), "data after its end"},
		{"not a pack", "HJUNKJUNKJUNKE", "bad pack header"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dest := filepath.Join(t.TempDir(), "ws")
			stream := makeTar(t, file("a.txt", body, 0o644), tarEntry{name: "objects/pack/pack-1.pack", typ: '0', body: tt.form, gitpack: true})
			err := extractTar(bytes.NewReader(stream), dest, os.Geteuid(), os.Getegid())
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "objects/pack/pack-1.pack") {
				t.Errorf("err = %v, want one naming the pack and saying %q", err, tt.want)
			}
			left, _ := os.ReadDir(filepath.Join(dest, "objects/pack"))
			if len(left) != 0 {
				t.Errorf("left in the pack directory: %v", left)
			}
		})
	}
}

// TestHashedFD: the hash of many chunks written quickly is right, and Sum
// returns (with a blocking return of spare buffers, the hashing goroutine
// could wait forever for a writer that had stopped).
func TestHashedFD(t *testing.T) {
	// /dev/null: the writer runs ahead of the hashing, as it can in a guest.
	f, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := newHashedFD(int(f.Fd()))
	h.sum = slowHash{h.sum} // the writer runs ahead, as under emulation; set before any chunk
	want := sha1.New()
	chunk := bytes.Repeat([]byte("0123456789abcdef"), 64<<10) // 1 MiB
	for i := range 32 {
		chunk[0] = byte(i)
		want.Write(chunk)
		if _, err := h.Write(chunk); err != nil {
			t.Fatal(err)
		}
	}
	got := make(chan [20]byte, 1)
	go func() { got <- h.Sum() }()
	select {
	case sum := <-got:
		if !bytes.Equal(sum[:], want.Sum(nil)) {
			t.Errorf("hash %x, want %x", sum, want.Sum(nil))
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Sum did not return")
	}
}

// slowHash is a hash that takes its time.
type slowHash struct{ hash.Hash }

func (s slowHash) Write(b []byte) (int, error) {
	time.Sleep(5 * time.Millisecond)
	return s.Hash.Write(b)
}
