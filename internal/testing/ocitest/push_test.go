package ocitest

import (
	"archive/tar"
	"testing"

	"github.com/google/go-cmp/cmp"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

func TestPushPullRoundTrip(t *testing.T) {
	owned := File("home/user/.profile", 0o600, "export PS1='$ '\n")
	owned.UID, owned.GID = 1000, 1000
	capped := File("usr/bin/ping", 0o755, "ELF")
	capped.Xattrs = map[string]string{"security.capability": "\x01\x00\x00\x02", "user.note": "hi"}
	layers := []struct {
		name      string
		build     func(testing.TB, ...Entry) v1.Layer
		mediaType types.MediaType
		entries   []Entry
	}{
		{"base", Layer, types.OCILayer, []Entry{
			Dir("etc", 0o755),
			File("etc/hostname", 0o644, "box\n"),
			Dir("home/user", 0o750),
			owned,
			Dir("usr/bin", 0o755),
			capped,
			SetuidFile("usr/bin/su", "ELF"),
			Symlink("usr/bin/sh", "busybox"),
			SizedFile("usr/bin/busybox", 0o755, 1<<20+7),
			Hardlink("usr/bin/ls", "usr/bin/busybox"),
			Dir("dev", 0o755),
			CharDev("dev/null", 1, 3),
			Fifo("dev/initctl"),
			Dir("var/cache", 0o755),
			File("var/cache/a", 0o644, "a"),
		}},
		{"deletions", Layer, types.OCILayer, []Entry{
			Whiteout("etc/hostname"),
			Opaque("var/cache"),
			File("var/cache/b", 0o644, "b"),
		}},
		{"zstd", ZstdLayer, types.OCILayerZStd, []Entry{
			File("etc/motd", 0o644, "zstd\n"),
		}},
	}
	var built []v1.Layer
	for _, l := range layers {
		built = append(built, l.build(t, l.entries...))
	}
	cfg := ImageConfig{
		Entrypoint: []string{"/init"},
		Cmd:        []string{"--verbose"},
		Env:        []string{"PATH=/usr/bin"},
		WorkingDir: "/home/user",
		User:       "1000:1000",
	}
	img := Image(t, cfg, built...)

	reg := StartRegistry(t)
	ref := reg.Ref("banger/roundtrip:v1")
	Push(t, ref, img)
	got, err := pull(t, ref)
	if err != nil {
		t.Fatalf("pulling %s: %v", ref, err)
	}

	if g, w := digest(t, got), digest(t, img); g != w {
		t.Errorf("pulled digest %s, pushed %s", g, w)
	}
	cf, err := got.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(v1.Platform{OS: "linux", Architecture: "amd64"}, *cf.Platform()); diff != "" {
		t.Errorf("platform (-want +got):\n%s", diff)
	}
	gotCfg := ImageConfig{Entrypoint: cf.Config.Entrypoint, Cmd: cf.Config.Cmd, Env: cf.Config.Env,
		WorkingDir: cf.Config.WorkingDir, User: cf.Config.User}
	if diff := cmp.Diff(cfg, gotCfg); diff != "" {
		t.Errorf("config (-want +got):\n%s", diff)
	}

	pulled, err := got.Layers()
	if err != nil {
		t.Fatal(err)
	}
	if len(pulled) != len(layers) {
		t.Fatalf("pulled %d layers, want %d", len(pulled), len(layers))
	}
	for i, l := range layers {
		t.Run(l.name, func(t *testing.T) {
			if g, w := digest(t, pulled[i]), digest(t, built[i]); g != w {
				t.Errorf("layer digest %s, pushed %s", g, w)
			}
			if mt, err := pulled[i].MediaType(); err != nil || mt != l.mediaType {
				t.Errorf("media type %q (%v), want %q", mt, err, l.mediaType)
			}
			var wantEntries []tarEntry
			for _, e := range l.entries {
				wantEntries = append(wantEntries, want(t, e))
			}
			if diff := cmp.Diff(wantEntries, readEntries(t, pulled[i])); diff != "" {
				t.Errorf("tar entries (-want +got):\n%s", diff)
			}
		})
	}
}

func TestSpecialEntries(t *testing.T) {
	tests := []struct {
		got  Entry
		want Entry
	}{
		{Whiteout("etc/hostname"), Entry{Name: "etc/.wh.hostname", Type: tar.TypeReg, Mode: 0o644}},
		{Whiteout("top/"), Entry{Name: ".wh.top", Type: tar.TypeReg, Mode: 0o644}},
		{Opaque("var/cache/"), Entry{Name: "var/cache/.wh..wh..opq", Type: tar.TypeReg, Mode: 0o644}},
		{Dir("etc", 0o755), Entry{Name: "etc/", Type: tar.TypeDir, Mode: 0o755}},
		{SetuidFile("su", ""), Entry{Name: "su", Type: tar.TypeReg, Mode: 0o4755, Body: []byte{}}},
	}
	for _, tt := range tests {
		t.Run(tt.want.Name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, tt.got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestEntryHeaderErrors(t *testing.T) {
	tests := map[string]Entry{
		"Body and BodySize": {Name: "f", Body: []byte("x"), BodySize: 1},
		"body on a dir":     {Name: "d/", Type: tar.TypeDir, Body: []byte("x")},
		"size on a symlink": {Name: "l", Type: tar.TypeSymlink, BodySize: 1},
	}
	for name, e := range tests {
		t.Run(name, func(t *testing.T) {
			if _, err := e.header(); err == nil {
				t.Errorf("header(%+v) succeeded, want an error", e)
			}
		})
	}
}
