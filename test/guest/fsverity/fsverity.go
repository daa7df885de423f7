// Package fsverity turns fs-verity on for files in a guest and measures
// them, for the in-guest suites that need verity files (properties and the
// comparison with in-tree IPE).
package fsverity

import (
	"encoding/binary"
	"fmt"
	"os"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Enable turns fs-verity on for path with SHA-256 and 4096-byte blocks, the
// parameters the host computes digests for, with a builtin signature when
// sig is not empty.
func Enable(path string, sig []byte) error {
	f, err := os.Open(path) // fs-verity refuses files open for writing
	if err != nil {
		return err
	}
	defer f.Close()
	arg := unix.FsverityEnableArg{Version: 1, Hash_algorithm: unix.FS_VERITY_HASH_ALG_SHA256, Block_size: 4096}
	if len(sig) > 0 {
		arg.Sig_size = uint32(len(sig))
		arg.Sig_ptr = uint64(uintptr(unsafe.Pointer(&sig[0])))
	}
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.FS_IOC_ENABLE_VERITY, uintptr(unsafe.Pointer(&arg)))
	runtime.KeepAlive(sig)
	if errno != 0 {
		return fmt.Errorf("enable fs-verity on %s: %w", path, errno)
	}
	return nil
}

// Measure returns the file's fs-verity digest as "sha256:HEX"
// (FS_IOC_MEASURE_VERITY), which is what fsverity_digest rules match.
func Measure(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	// struct fsverity_digest: u16 algorithm, u16 size (in: room), digest.
	buf := make([]byte, 4+64)
	binary.NativeEndian.PutUint16(buf[2:], 64)
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.FS_IOC_MEASURE_VERITY, uintptr(unsafe.Pointer(&buf[0])))
	if errno != 0 {
		return "", fmt.Errorf("measure fs-verity of %s: %w", path, errno)
	}
	alg, size := binary.NativeEndian.Uint16(buf), binary.NativeEndian.Uint16(buf[2:])
	if alg != unix.FS_VERITY_HASH_ALG_SHA256 || size != 32 {
		return "", fmt.Errorf("measure fs-verity of %s: algorithm %d, size %d (want SHA-256)", path, alg, size)
	}
	return fmt.Sprintf("sha256:%x", buf[4:4+size]), nil
}
