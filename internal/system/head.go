package system

import "bytes"

// HeadBuffer keeps the first Max bytes written to it and drops the rest,
// while reporting every write as whole: a child's stderr or a guest's
// message, bounded however much is written.
type HeadBuffer struct {
	Max int
	buf bytes.Buffer
}

func (h *HeadBuffer) Write(p []byte) (int, error) {
	if room := h.Max - h.buf.Len(); room > 0 {
		h.buf.Write(p[:min(room, len(p))])
	}
	return len(p), nil
}

// Bytes is what was kept.
func (h *HeadBuffer) Bytes() []byte { return h.buf.Bytes() }

// String is what was kept.
func (h *HeadBuffer) String() string { return h.buf.String() }
