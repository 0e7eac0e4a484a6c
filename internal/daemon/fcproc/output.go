package fcproc

import (
	"io"
	"os"
	"sync"
)

// tailWriter keeps the last tailSize bytes Firecracker wrote to it; with a
// console log, which Firecracker writes itself, it reads them back from
// the file instead.
type tailWriter struct {
	path string // the console log, or ""

	mu  sync.Mutex // guards buf
	buf []byte     // guarded by mu
}

const tailSize = 8 << 10

func (t *tailWriter) Write(b []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, b...)
	if over := len(t.buf) - tailSize; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(b), nil
}

// Tail returns the last bytes Firecracker wrote.
func (t *tailWriter) Tail() string {
	if t.path == "" {
		t.mu.Lock()
		defer t.mu.Unlock()
		return string(t.buf)
	}
	f, err := os.Open(t.path)
	if err != nil {
		return ""
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return ""
	}
	off := max(st.Size()-tailSize, 0)
	b, _ := io.ReadAll(io.NewSectionReader(f, off, st.Size()-off))
	return string(b)
}
