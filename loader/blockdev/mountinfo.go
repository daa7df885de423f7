package blockdev

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

// Mount is one line of /proc/PID/mountinfo (see proc_pid_mountinfo(5)).
type Mount struct {
	ID, ParentID int
	// Major and Minor are the st_dev of the mounted superblock, which for
	// a block-backed filesystem is its block device.
	Major, Minor uint32
	Root         string // the directory of the filesystem mounted here
	MountPoint   string
	Options      string // per-mount options
	FSType       string
	Source       string
	SuperOptions string
}

// Mounts reads the calling process's mount table.
func Mounts() ([]Mount, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("open mountinfo: %w", err)
	}
	defer f.Close()
	return ParseMountInfo(f)
}

// ParseMountInfo parses the mountinfo format.
func ParseMountInfo(r io.Reader) ([]Mount, error) {
	var mounts []Mount
	scanner := bufio.NewScanner(r)
	// Lines carry paths of up to PATH_MAX each, plus options.
	scanner.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	for lineNo := 1; scanner.Scan(); lineNo++ {
		line := scanner.Text()
		if line == "" {
			continue
		}
		m, err := parseMountLine(line)
		if err != nil {
			return nil, fmt.Errorf("parse mountinfo line %d: %w", lineNo, err)
		}
		mounts = append(mounts, m)
	}
	if err := scanner.Err(); err != nil {
		return nil, fmt.Errorf("read mountinfo: %w", err)
	}
	return mounts, nil
}

func parseMountLine(line string) (Mount, error) {
	fields := strings.Split(line, " ")
	// Optional fields end at a lone "-"; they start after the sixth field.
	sep := -1
	for i := 6; i < len(fields); i++ {
		if fields[i] == "-" {
			sep = i
			break
		}
	}
	if sep < 0 || len(fields) < sep+4 {
		return Mount{}, fmt.Errorf("malformed line %q", line)
	}
	var m Mount
	var err error
	if m.ID, err = strconv.Atoi(fields[0]); err != nil {
		return Mount{}, fmt.Errorf("parse mount id: %w", err)
	}
	if m.ParentID, err = strconv.Atoi(fields[1]); err != nil {
		return Mount{}, fmt.Errorf("parse parent id: %w", err)
	}
	if m.Major, m.Minor, err = ParseMajorMinor(fields[2]); err != nil {
		return Mount{}, err
	}
	m.Root = unescapeOctal(fields[3])
	m.MountPoint = unescapeOctal(fields[4])
	m.Options = fields[5]
	m.FSType = unescapeOctal(fields[sep+1])
	m.Source = unescapeOctal(fields[sep+2])
	m.SuperOptions = fields[sep+3]
	return m, nil
}

// ParseMajorMinor parses "major:minor" as device-mapper tables and
// mountinfo write device numbers.
func ParseMajorMinor(s string) (major, minor uint32, err error) {
	majStr, minStr, ok := strings.Cut(s, ":")
	if !ok {
		return 0, 0, fmt.Errorf("parse device number %q: no colon", s)
	}
	maj, err := strconv.ParseUint(majStr, 10, 32)
	if err != nil {
		return 0, 0, fmt.Errorf("parse device number %q: %w", s, err)
	}
	min, err := strconv.ParseUint(minStr, 10, 32)
	if err != nil {
		return 0, 0, fmt.Errorf("parse device number %q: %w", s, err)
	}
	return uint32(maj), uint32(min), nil
}

// unescapeOctal undoes the kernel's mangling of spaces, tabs, newlines and
// backslashes in mountinfo paths (\040, \011, \012, \134).
func unescapeOctal(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && s[i+1] >= '0' && s[i+1] <= '3' && isOctal(s[i+2]) && isOctal(s[i+3]) {
			v := (s[i+1]-'0')<<6 | (s[i+2]-'0')<<3 | (s[i+3] - '0')
			b.WriteByte(v)
			i += 3
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isOctal(c byte) bool { return c >= '0' && c <= '7' }

// MountPoints returns where the block device major:minor is mounted, in
// mount-table order.
func MountPoints(mounts []Mount, major, minor uint32) []string {
	var points []string
	for _, m := range mounts {
		if m.Major == major && m.Minor == minor {
			points = append(points, m.MountPoint)
		}
	}
	return points
}
