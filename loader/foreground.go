package loader

import (
	"context"
	"errors"
	"os"
)

// Serve is the foreground loader's life: it passes every decision to emit
// and, where root hashes are resolved in userspace, resolves them again
// whenever a device-mapper disk changes, until ctx ends. warn receives what
// goes wrong without stopping enforcement.
func (l *Loader) Serve(ctx context.Context, emit func(AccessRecord), warn func(string)) error {
	reader, err := l.Running.Events(true)
	if err != nil {
		return err
	}
	defer reader.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		<-ctx.Done()
		reader.Close()
	}()
	if l.Running.State.DMVerityMode == DMVerityUserspace {
		go l.watchDevices(ctx, warn)
	}
	for {
		rec, err := reader.Read()
		if err != nil {
			if ctx.Err() != nil && errors.Is(err, os.ErrClosed) {
				return nil
			}
			return err
		}
		emit(rec)
	}
}

// watchDevices keeps the devices map current while the foreground loader
// runs, as the resolver does for pinned loads (resolver.go): listening
// before its first scan closes the gap since the load's own scan.
func (l *Loader) watchDevices(ctx context.Context, warn func(string)) {
	f := &deviceFollower{paths: l.paths, devices: l.Running.devices, warn: warn}
	f.follow(ctx, func() bool { return true }, nil)
}
