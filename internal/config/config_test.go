package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"banger/internal/errdefs"
)

const documentedFile = "../../packaging/config.toml"

// writeConfig writes body to a config.toml in a fresh temp dir.
func writeConfig(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.toml")
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// checkNames fails t unless err's message names the file path and, outside
// the path (temp dirs carry the test's name), the key.
func checkNames(t *testing.T, err error, key, path string) {
	t.Helper()
	msg := err.Error()
	if !strings.Contains(msg, path) {
		t.Errorf("error %q does not name the file %s", msg, path)
	}
	if !strings.Contains(strings.ReplaceAll(msg, path, ""), key) {
		t.Errorf("error %q does not name the key %q", msg, key)
	}
}

func TestDocumentedFileIsTheDefaults(t *testing.T) {
	cfg, err := Load(documentedFile, true)
	if err != nil {
		t.Fatalf("Load(%s): %v", documentedFile, err)
	}
	if cfg.File != documentedFile {
		t.Errorf("File = %q, want %q", cfg.File, documentedFile)
	}
	cfg.File = ""
	if diff := cmp.Diff(Default(), cfg); diff != "" {
		t.Errorf("%s differs from Default() (-default +file):\n%s", documentedFile, diff)
	}
}

func TestDocumentedFileListsEveryKey(t *testing.T) {
	data, err := os.ReadFile(documentedFile)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(data), "\n")
	for _, k := range Keys {
		want := k.Name + " = " + k.Default
		if !slices.Contains(lines, want) {
			t.Errorf("%s has no line %q", documentedFile, want)
		}
	}
}

func TestKeysMatchConfigFields(t *testing.T) {
	var tags []string
	typ := reflect.TypeFor[Config]()
	for i := range typ.NumField() {
		tag := typ.Field(i).Tag.Get("toml")
		if tag == "" || tag == "-" {
			continue
		}
		tags = append(tags, tag)
	}
	var names []string
	for _, k := range Keys {
		names = append(names, k.Name)
	}
	slices.Sort(tags)
	slices.Sort(names)
	if diff := cmp.Diff(tags, names); diff != "" {
		t.Errorf("config.Keys names differ from Config's toml tags (-tags +Keys):\n%s", diff)
	}
}

func TestLoadMissingFile(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "nope.toml")

	cfg, err := Load(missing, false)
	if err != nil {
		t.Fatalf("Load(missing, explicit=false): %v", err)
	}
	if cfg.File != "" {
		t.Errorf("File = %q, want \"\"", cfg.File)
	}
	if diff := cmp.Diff(Default(), cfg); diff != "" {
		t.Errorf("missing default file: config differs from Default() (-want +got):\n%s", diff)
	}

	_, err = Load(missing, true)
	if err == nil {
		t.Fatal("Load(missing, explicit=true) succeeded, want an error")
	}
	if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), missing) {
		t.Errorf("Load(missing, explicit=true) = %v, want a not-exist error naming %s", err, missing)
	}
}

func TestLoadUnknownKey(t *testing.T) {
	path := writeConfig(t, "vmm = \"qemu\"\nfrobnicate = true\n")
	_, err := Load(path, true)
	if err == nil {
		t.Fatal("Load succeeded, want an error for an unknown key")
	}
	checkNames(t, err, "frobnicate", path)
	if !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("error %v is not ErrInvalidArgument", err)
	}
}

func TestLoadWrongType(t *testing.T) {
	path := writeConfig(t, "vmm = 5\n")
	_, err := Load(path, true)
	if err == nil {
		t.Fatal("Load succeeded, want an error for vmm = 5")
	}
	checkNames(t, err, "vmm", path)
	if !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("error %v is not ErrInvalidArgument", err)
	}
}

func TestLoadBadValues(t *testing.T) {
	tests := []struct {
		name string
		line string
		key  string
	}{
		{"vmm", `vmm = "xen"`, "vmm"},
		{"disk", `disk = "zfs"`, "disk"},
		{"log level", `log_level = "loud"`, "log_level"},
		{"log format", `log_format = "xml"`, "log_format"},
		{"relative root", `root = "relative"`, "root"},
		{"relative socket", `socket = "run/banger.sock"`, "socket"},
		{"socket too long", `socket = "/` + strings.Repeat("s", 107) + `"`, "socket"},
		{"group starting with dash", `group = "-bad"`, "group"},
		{"group starting with digit", `group = "9x"`, "group"},
		{"tiny max request", `max_request_bytes = 10`, "max_request_bytes"},
		{"shutdown timeout not a duration", `shutdown_timeout = "forever"`, "shutdown_timeout"},
		{"shutdown timeout too long", `shutdown_timeout = "2h"`, "shutdown_timeout"},
		{"zero op retention", `op_retention = "0s"`, "op_retention"},
		{"negative jailer uid", `jailer_uid = -1`, "jailer_uid"},
		{"jailer gid too big", `jailer_gid = 4294967295`, "jailer_gid"},
		{"relative jail base", `jailer_chroot_base = "jail"`, "jailer_chroot_base"},
		{"jail base not clean", `jailer_chroot_base = "/srv/../jail"`, "jailer_chroot_base"},
		{"jailed binary not named firecracker", "jailer_binary = \"jailer\"\nfirecracker_binary = \"/opt/fc\"", "firecracker_binary"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeConfig(t, tt.line+"\n")
			_, err := Load(path, true)
			if err == nil {
				t.Fatalf("Load(%s) succeeded, want an error", tt.line)
			}
			checkNames(t, err, tt.key, path)
			if !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Errorf("error %v is not ErrInvalidArgument", err)
			}
		})
	}
}

func TestLoadOverrides(t *testing.T) {
	path := writeConfig(t, `
# a comment
root = "/srv/banger"
vmm = "qemu"
log_format = "json"
max_request_bytes = 8192
shutdown_timeout = "5s"
`)
	cfg, err := Load(path, true)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	want := Default()
	want.Root = "/srv/banger"
	want.VMM = "qemu"
	want.LogFormat = "json"
	want.MaxRequestBytes = 8192
	want.ShutdownTimeout = Duration(5 * time.Second)
	want.File = path
	if diff := cmp.Diff(want, cfg); diff != "" {
		t.Errorf("Load (-want +got):\n%s", diff)
	}
}
