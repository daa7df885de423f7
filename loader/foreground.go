package loader

import (
	"context"
	"errors"
	"os"
	"time"

	"github.com/bpfipe/bpfipe/loader/blockdev"
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

// watchDevices re-resolves dm-verity devices on device-mapper uevents, and
// every few seconds in case uevents are missed (the socket buffer can
// overflow) or unavailable.
func (l *Loader) watchDevices(ctx context.Context, warn func(string)) {
	changed := make(chan struct{}, 1)
	if listener, err := blockdev.ListenUevents(); err != nil {
		warn("listen for device uevents: " + err.Error() + "; resolving dm-verity devices every few seconds instead")
	} else {
		go func() {
			<-ctx.Done()
			listener.Close()
		}()
		go func() {
			for {
				ev, err := listener.Next()
				if err != nil && !errors.Is(err, blockdev.ErrUeventOverflow) {
					return // closed, or broken: the ticker carries on
				}
				// After an overflow any device may have changed.
				if err != nil || ev.IsDMDisk() {
					select {
					case changed <- struct{}{}:
					default:
					}
				}
			}
		}()
	}
	tick := time.NewTicker(5 * time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-tick.C:
		}
		for _, w := range l.Running.RefreshDevices() {
			warn(w)
		}
	}
}
