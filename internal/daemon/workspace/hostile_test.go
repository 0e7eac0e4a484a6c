package workspace

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

type ent struct {
	name, body, link string
	typ              byte
}

func hostileTar(t *testing.T, ents ...ent) *bytes.Buffer {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range ents {
		typ := e.typ
		if typ == 0 {
			typ = tar.TypeReg
		}
		hdr := &tar.Header{Name: e.name, Typeflag: typ, Linkname: e.link, Mode: 0o644, Size: int64(len(e.body)), Format: tar.FormatPAX}
		if typ != tar.TypeReg {
			hdr.Size = 0
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(e.body))
	}
	tw.Close()
	return &buf
}

func TestExportHostile(t *testing.T) {
	many := make([]ent, 101)
	for i := range many {
		many[i] = ent{name: strings.Repeat("x", i+1)}
	}
	tests := []struct {
		name    string
		ents    []ent
		raw     []byte
		wantErr string
	}{
		{name: "dotdot", ents: []ent{{name: "../escaped", body: "x"}}, wantErr: `entry "../escaped": ".." in name`},
		{name: "inner dotdot", ents: []ent{{name: "a/../../escaped", body: "x"}}, wantErr: `".." in name`},
		{name: "absolute", ents: []ent{{name: "/etc/passwd", body: "x"}}, wantErr: "absolute name"},
		{name: "char device", ents: []ent{{name: "null", typ: tar.TypeChar}}, wantErr: `entry "null": device node`},
		{name: "block device", ents: []ent{{name: "sda", typ: tar.TypeBlock}}, wantErr: "device node"},
		{name: "fifo", ents: []ent{{name: "p", typ: tar.TypeFifo}}, wantErr: "FIFO"},
		{name: "write through symlink", ents: []ent{{name: "l", typ: tar.TypeSymlink, link: "/etc"}, {name: "l/passwd", body: "x"}}, wantErr: `written through the symlink "l"`},
		{name: "write through inner symlink", ents: []ent{{name: "d", typ: tar.TypeDir}, {name: "d/l", typ: tar.TypeSymlink, link: "."}, {name: "d/l/f", body: "x"}}, wantErr: "written through the symlink"},
		{name: "below a file", ents: []ent{{name: "f", body: "x"}, {name: "f/g", body: "y"}}, wantErr: "not a directory"},
		{name: "twice", ents: []ent{{name: "f", body: "x"}, {name: "f", body: "y"}}, wantErr: "given twice"},
		{name: "hard link out", ents: []ent{{name: "h", typ: tar.TypeLink, link: "/etc/shadow"}}, wantErr: "hard link"},
		{name: "hard link to symlink", ents: []ent{{name: "l", typ: tar.TypeSymlink, link: "/etc/shadow"}, {name: "h", typ: tar.TypeLink, link: "l"}}, wantErr: "hard link"},
		{name: "too many entries", ents: many, wantErr: "more than 100 entries"},
		{name: "too many bytes", ents: []ent{{name: "big", body: strings.Repeat("b", 2000)}}, wantErr: "more than 1000 bytes"},
		{name: "not a tar", raw: []byte(strings.Repeat("garbage!", 200)), wantErr: "reading it"},
	}
	g := testGit(t)
	host, _, m := prepared(t, g)
	before := snapshot(t, g, host)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stream := bytes.NewBuffer(tt.raw)
			if tt.raw == nil {
				// A good change first: refusing must drop it too.
				stream = hostileTar(t, append([]ent{{name: "README", body: "evil\n"}}, tt.ents...)...)
			}
			_, err := Export(context.Background(), g, host, m.Base, stream, ExportOptions{Branch: "banger/evil", Limits: Limits{MaxEntries: 100, MaxBytes: 1000}})
			if !errors.Is(err, ErrHostileArchive) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want ErrHostileArchive holding %q", err, tt.wantErr)
			}
			if d := cmp.Diff(before, snapshot(t, g, host)); d != "" {
				t.Errorf("the host repository changed:\n%s", d)
			}
		})
	}
}

func TestExportHostileBundle(t *testing.T) {
	g := testGit(t)
	host, guest, m := prepared(t, g)
	before := snapshot(t, g, host)
	// A bundle of unrelated history: does not descend from the base.
	other := t.TempDir()
	run(t, g, other, "init", "-q")
	run(t, g, other, "commit", "-q", "--allow-empty", "-m", "unrelated")
	unrelated := runArgv(t, g, []string{"git", "-C", other, "bundle", "create", "-", "HEAD"})
	for name, b := range map[string]*bytes.Buffer{
		"garbage":   bytes.NewBufferString("# v2 git bundle\nnot really\n"),
		"unrelated": unrelated,
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Export(context.Background(), g, host, m.Base, guestTree(t, guest), ExportOptions{Branch: "banger/evil", Bundle: b})
			if !errors.Is(err, ErrHostileArchive) {
				t.Fatalf("err = %v, want ErrHostileArchive", err)
			}
			t.Log(err)
			if d := cmp.Diff(before, snapshot(t, g, host)); d != "" {
				t.Errorf("the host repository changed:\n%s", d)
			}
		})
	}
}
