package dmsnap

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"banger/internal/errdefs"
	"banger/internal/system/systest"
)

func TestAvailable(t *testing.T) {
	dir := t.TempDir()
	present := filepath.Join(dir, "control")
	if err := os.WriteFile(present, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing")
	tests := []struct {
		name    string
		control string
		targets systest.Response
		wantErr string // "" for available
		wantLog string
	}{
		{
			name:    "snapshot target listed",
			control: present,
			targets: systest.Output("snapshot-merge   v1.5.0\nsnapshot-origin  v1.9.0\nsnapshot         v1.16.0\nlinear           v1.4.0\n"),
			wantLog: "dmsetup targets\n",
		},
		{
			name:    "no control node",
			control: missing,
			wantErr: "no device-mapper in this kernel: " + missing + " missing: unavailable",
		},
		{
			name:    "control node that is not device-mapper's",
			control: "/dev/null/control",
			wantErr: "device-mapper: open /dev/null/control: not a directory: unavailable",
		},
		{
			name:    "no snapshot target",
			control: present,
			targets: systest.Output("snapshot-origin  v1.9.0\nlinear           v1.4.0\n"),
			wantErr: "device-mapper has no snapshot target (modprobe dm_snapshot): unavailable",
			wantLog: "dmsetup targets\n",
		},
		{
			name:    "dmsetup fails",
			control: present,
			targets: systest.Exit(1, "Failure to communicate with kernel device-mapper driver.\n"),
			wantErr: "device-mapper: list targets: dmsetup targets: exit status 1: Failure to communicate with kernel device-mapper driver.: unavailable",
			wantLog: "dmsetup targets\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			old := controlPath
			controlPath = tt.control
			t.Cleanup(func() { controlPath = old })
			var f systest.Fake
			f.On([]string{"dmsetup", "targets"}, tt.targets)
			err := Available(t.Context(), &f)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("Available: %v", err)
			case tt.wantErr != "" && (err == nil || err.Error() != tt.wantErr):
				t.Errorf("Available = %v, want %q", err, tt.wantErr)
			case tt.wantErr != "" && !errors.Is(err, errdefs.ErrUnavailable):
				t.Errorf("Available = %v, not ErrUnavailable", err)
			}
			diffLog(t, &f, tt.wantLog)
		})
	}
}
