package system

import (
	"io"
	"os"
	"sync"
)

// TailSize is how many bytes of a process's output a TailBuffer keeps.
const TailSize = 8 << 10

// TailBuffer keeps the last TailSize bytes written to it, for a child
// process's stdout and stderr. When Path is set the process writes that
// file itself instead (a console or log file) and Tail reads the file's
// last TailSize bytes, none from before offset From (what the file held
// before this process started). Set Path and From before the first Tail.
type TailBuffer struct {
	Path string // the file the process writes, or ""
	From int64  // with Path: where this process's output starts

	mu  sync.Mutex // guards buf
	buf []byte     // guarded by mu
}

// Write keeps the end of b; it never fails.
func (t *TailBuffer) Write(b []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, b...)
	if over := len(t.buf) - TailSize; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(b), nil
}

// Tail returns the last bytes written, or read from Path; "" when Path
// cannot be read.
func (t *TailBuffer) Tail() string {
	if t.Path == "" {
		t.mu.Lock()
		defer t.mu.Unlock()
		return string(t.buf)
	}
	f, err := os.Open(t.Path)
	if err != nil {
		return ""
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return ""
	}
	off := max(st.Size()-TailSize, t.From, 0)
	b, _ := io.ReadAll(io.NewSectionReader(f, off, st.Size()-off))
	return string(b)
}
