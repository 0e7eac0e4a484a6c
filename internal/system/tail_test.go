package system

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func TestTailBufferKeepsTheEnd(t *testing.T) {
	var tb TailBuffer
	if got := tb.Tail(); got != "" {
		t.Errorf("empty Tail = %q", got)
	}
	if n, err := tb.Write([]byte("hello ")); n != 6 || err != nil {
		t.Fatalf("Write = %d, %v", n, err)
	}
	tb.Write([]byte("world"))
	if got := tb.Tail(); got != "hello world" {
		t.Errorf("Tail = %q, want %q", got, "hello world")
	}

	big := strings.Repeat("a", TailSize) + "end"
	if n, err := tb.Write([]byte(big)); n != len(big) || err != nil {
		t.Fatalf("Write(%d bytes) = %d, %v", len(big), n, err)
	}
	got := tb.Tail()
	if len(got) != TailSize || !strings.HasSuffix(got, "aend") {
		t.Errorf("Tail after a large write: %d bytes ending %q, want %d ending %q", len(got), got[max(len(got)-4, 0):], TailSize, "aend")
	}
}

func TestTailBufferConcurrentWrites(t *testing.T) {
	var tb TailBuffer
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 1000 {
				tb.Write([]byte("0123456789"))
			}
		})
	}
	wg.Wait()
	// Writes are kept whole, so the tail is the end of the repeated write.
	want := strings.Repeat("0123456789", TailSize/10+1)
	want = want[len(want)-TailSize:]
	if got := tb.Tail(); got != want {
		t.Errorf("Tail after concurrent writes: %d bytes, not the end of whole writes", len(got))
	}
}

func TestTailBufferFromFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "out.log")
	before := "an earlier run's output\n"
	if err := os.WriteFile(path, []byte(before), 0o644); err != nil {
		t.Fatal(err)
	}
	tb := TailBuffer{Path: path, From: int64(len(before))}
	tb.Write([]byte("not kept: the file is read instead"))
	if got := tb.Tail(); got != "" {
		t.Errorf("Tail with nothing after From = %q, want empty", got)
	}

	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.WriteString("started\n")
	if got := tb.Tail(); got != "started\n" {
		t.Errorf("Tail = %q, want only what came after From", got)
	}
	f.WriteString(strings.Repeat("x", TailSize))
	if got := tb.Tail(); len(got) != TailSize || strings.Contains(got, "started") {
		t.Errorf("Tail of a long file: %d bytes (started kept: %v), want the last %d", len(got), strings.Contains(got, "started"), TailSize)
	}

	whole := TailBuffer{Path: path}
	if got := whole.Tail(); len(got) != TailSize {
		t.Errorf("Tail with From 0: %d bytes, want %d", len(got), TailSize)
	}
	missing := TailBuffer{Path: filepath.Join(t.TempDir(), "missing.log")}
	if got := missing.Tail(); got != "" {
		t.Errorf("Tail of a missing file = %q, want empty", got)
	}
}
