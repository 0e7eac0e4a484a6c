package imagemgr

import (
	"errors"
	"strings"
	"testing"

	"banger/internal/errdefs"
)

func TestValidateName(t *testing.T) {
	tests := []struct {
		name string
		rule string // "" for valid
	}{
		{"debian", ""},
		{"debian:bookworm", ""},
		{"my_image-2.0", ""},
		{"9lives", ""},
		{"A", ""},
		{strings.Repeat("a", 128), ""},
		{"", "empty"},
		{strings.Repeat("a", 129), "129 bytes long"},
		{"-debian", "must start with a letter or a digit"},
		{".hidden", "must start with a letter or a digit"},
		{":tag", "must start with a letter or a digit"},
		{"library/debian", `'/' at offset 7`},
		{"has space", `' ' at offset 3`},
		{"tab\tname", `'\t' at offset 3`},
		{"nul\x00", `'\x00' at offset 3`},
		{"debian@sha256", `'@' at offset 6`},
		{"naïve", "offset 2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidateName(tt.name)
			if tt.rule == "" {
				if err != nil {
					t.Fatalf("ValidateName(%q) = %v, want nil", tt.name, err)
				}
				return
			}
			if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), tt.rule) {
				t.Fatalf("ValidateName(%q) = %v, want ErrInvalidArgument saying %q", tt.name, err, tt.rule)
			}
			if len(tt.name) < 200 && !strings.Contains(err.Error(), "invalid name ") {
				t.Errorf("error %q does not quote the name", err)
			}
		})
	}
}

func TestDefaultName(t *testing.T) {
	tests := []struct{ ref, want string }{
		{"debian", "debian"},
		{"debian:bookworm", "debian:bookworm"},
		{"library/debian:bookworm", "debian:bookworm"},
		{"docker.io/library/debian:bookworm", "debian:bookworm"},
		{"127.0.0.1:5000/library/debian:bookworm", "debian:bookworm"},
		{"localhost/foo/bar", "bar"},
		{"localhost:5000/foo", "foo"},
		{"ghcr.io/org/team/tool:v1.2.3", "tool:v1.2.3"},
		{"debian@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", "debian-0123456789ab"},
		{"127.0.0.1:5000/debian:bookworm@sha256:0123456789abcdef", "debian:bookworm"},
		{"debian@sha256:abc", "debian-abc"},
		{"  ubuntu:24.04  ", "ubuntu:24.04"},
		{"", "image"},
		{"@sha256:", "image"},
		{"/", "image"},
		{"__weird", "weird"},
		{"img:tag with space", "img:tag-with-space"},
		{"img:" + strings.Repeat("t", 200), "img:" + strings.Repeat("t", 124)},
	}
	for _, tt := range tests {
		got := DefaultName(tt.ref)
		if got != tt.want {
			t.Errorf("DefaultName(%q) = %q, want %q", tt.ref, got, tt.want)
		}
		if err := ValidateName(got); err != nil {
			t.Errorf("DefaultName(%q) = %q does not validate: %v", tt.ref, got, err)
		}
	}
}

// FuzzDefaultName checks that any reference gives a valid name. Plain
// `go test` runs the seeds.
func FuzzDefaultName(f *testing.F) {
	for _, s := range []string{"debian", "a/b/c:d@e:f", "\x00", ":::", "@", "/:", "é/ü:ß", strings.Repeat("-", 300)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, ref string) {
		if err := ValidateName(DefaultName(ref)); err != nil {
			t.Errorf("DefaultName(%q): %v", ref, err)
		}
	})
}
