package daemon

import (
	"context"
	"os"

	"banger/internal/rpc"
	"banger/internal/version"
)

// noParams binds a method that takes none, so stray fields are refused
// rather than silently ignored.
type noParams struct{}

func (d *Daemon) ping(call *rpc.Call) (rpc.PingResult, error) {
	if err := call.Bind(&noParams{}); err != nil {
		return rpc.PingResult{}, err
	}
	return rpc.PingResult{PID: os.Getpid()}, nil
}

func (d *Daemon) info(ctx context.Context, call *rpc.Call) (rpc.InfoResult, error) {
	if err := call.Bind(&noParams{}); err != nil {
		return rpc.InfoResult{}, err
	}
	schema, err := d.store.SchemaVersion(ctx)
	if err != nil {
		return rpc.InfoResult{}, err
	}
	v := version.Get()
	return rpc.InfoResult{
		Version:       v.Version,
		Commit:        v.Commit,
		GoVersion:     v.GoVersion,
		PID:           os.Getpid(),
		Root:          d.layout.Root,
		Socket:        d.config.Socket,
		ConfigFile:    d.config.File,
		SchemaVersion: schema,
		StartedAt:     d.startedAt,
	}, nil
}
