package system

import "testing"

func TestHeadBufferKeepsTheFirstBytes(t *testing.T) {
	h := &HeadBuffer{Max: 5}
	for _, s := range []string{"abc", "defg", "hij"} {
		if n, err := h.Write([]byte(s)); n != len(s) || err != nil {
			t.Fatalf("Write(%q) = %d, %v; want the whole write reported", s, n, err)
		}
	}
	if got := h.String(); got != "abcde" {
		t.Errorf("kept %q, want %q", got, "abcde")
	}
}
