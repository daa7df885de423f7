package dm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// The byte layouts that follow the dm_ioctl header. x/sys mirrors
// dm_target_spec but has no type for the variable-length name list, so both
// are read and written by hand at these offsets.
const (
	// struct dm_target_spec: sector_start u64, length u64, status s32,
	// next u32, target_type[16], then the NUL-terminated parameters.
	specSectorStart = 0
	specLength      = 8
	specNext        = 20
	specType        = 24
	specSize        = unix.SizeofDmTargetSpec

	// struct dm_name_list: dev u64, next u32, then the NUL-terminated
	// name. From Linux 5.14 the name is followed, at the next 8-byte
	// boundary, by event_nr u32 and flags u32, and when flags says so by
	// the NUL-terminated UUID at the boundary after that.
	nameListDev  = 0
	nameListNext = 8
	nameListName = 12
)

func align(n int) int { return (n + dataAlign - 1) &^ (dataAlign - 1) }

// parseNameList decodes the DM_LIST_DEVICES result area.
func parseNameList(data []byte) ([]Device, error) {
	// With no devices the kernel returns no data, or one record whose dev
	// is zero (no device has number 0:0).
	if len(data) < nameListName || binary.NativeEndian.Uint64(data[nameListDev:]) == 0 {
		return nil, nil
	}
	var devices []Device
	for off := 0; ; {
		if off+nameListName > len(data) {
			return nil, fmt.Errorf("name list record at %d overruns the %d-byte result", off, len(data))
		}
		next := int(binary.NativeEndian.Uint32(data[off+nameListNext:]))
		end := len(data)
		if next != 0 {
			// A record holds at least its header and a NUL; a smaller
			// step would loop or overlap.
			if next <= nameListName || next > len(data)-off {
				return nil, fmt.Errorf("name list record at %d has bad next offset %d", off, next)
			}
			end = off + next
		}
		record := data[off:end]
		nameLen := bytes.IndexByte(record[nameListName:], 0)
		if nameLen < 0 {
			return nil, fmt.Errorf("name list record at %d has an unterminated name", off)
		}
		d := Device{
			Dev:  binary.NativeEndian.Uint64(record[nameListDev:]),
			Name: string(record[nameListName : nameListName+nameLen]),
		}
		if d.Name == "" {
			return nil, fmt.Errorf("name list record at %d has an empty name", off)
		}
		uuid, err := nameListUUID(record, nameListName+nameLen+1)
		if err != nil {
			return nil, fmt.Errorf("name list record at %d: %w", off, err)
		}
		d.UUID = uuid
		devices = append(devices, d)
		if next == 0 {
			return devices, nil
		}
		off = end
	}
}

// nameListUUID reads the UUID that kernels from 5.14 append when asked
// with DM_UUID_FLAG. Older kernels leave the bytes as the caller sent them
// (zero), so a flags word with neither HAS_UUID nor DOESNT_HAVE_UUID means
// there is no trailer.
func nameListUUID(record []byte, afterName int) (string, error) {
	trailer := align(afterName)
	if trailer+8 > len(record) {
		return "", nil
	}
	flags := binary.NativeEndian.Uint32(record[trailer+4:])
	if flags&unix.DM_NAME_LIST_FLAG_HAS_UUID == 0 {
		return "", nil
	}
	start := align(trailer + 8)
	if start >= len(record) {
		return "", errors.New("uuid flag set but no uuid follows")
	}
	n := bytes.IndexByte(record[start:], 0)
	if n < 0 {
		return "", errors.New("unterminated uuid")
	}
	return string(record[start : start+n]), nil
}

// encodeTargetSpecs lays out targets for DM_TABLE_LOAD. On input each
// spec's next is the distance from that spec to the following one.
func encodeTargetSpecs(targets []Target) ([]byte, error) {
	var buf []byte
	for _, t := range targets {
		if t.Type == "" || len(t.Type) >= unix.DM_MAX_TYPE_NAME {
			return nil, fmt.Errorf("target type %q is empty or longer than %d bytes", t.Type, unix.DM_MAX_TYPE_NAME-1)
		}
		if bytes.IndexByte([]byte(t.Type), 0) >= 0 || bytes.IndexByte([]byte(t.Params), 0) >= 0 {
			return nil, fmt.Errorf("target %q contains a NUL byte", t.Type)
		}
		recordLen := align(specSize + len(t.Params) + 1)
		record := make([]byte, recordLen)
		binary.NativeEndian.PutUint64(record[specSectorStart:], t.Start)
		binary.NativeEndian.PutUint64(record[specLength:], t.Length)
		binary.NativeEndian.PutUint32(record[specNext:], uint32(recordLen))
		copy(record[specType:specType+unix.DM_MAX_TYPE_NAME], t.Type)
		copy(record[specSize:], t.Params)
		buf = append(buf, record...)
	}
	return buf, nil
}

// parseTargetSpecs decodes the DM_TABLE_STATUS result area. On output each
// spec's next is an offset from the start of the result area, unlike on
// input.
func parseTargetSpecs(data []byte, count uint32) ([]Target, error) {
	if uint64(count)*specSize > uint64(len(data)) {
		return nil, fmt.Errorf("%d targets cannot fit in a %d-byte result", count, len(data))
	}
	targets := make([]Target, 0, count)
	for i, off := uint32(0), 0; i < count; i++ {
		if off+specSize > len(data) {
			return nil, fmt.Errorf("target %d at %d overruns the %d-byte result", i, off, len(data))
		}
		spec := data[off : off+specSize]
		paramsLen := bytes.IndexByte(data[off+specSize:], 0)
		if paramsLen < 0 {
			return nil, fmt.Errorf("target %d has unterminated parameters", i)
		}
		targets = append(targets, Target{
			Start:  binary.NativeEndian.Uint64(spec[specSectorStart:]),
			Length: binary.NativeEndian.Uint64(spec[specLength:]),
			Type:   cString(spec[specType : specType+unix.DM_MAX_TYPE_NAME]),
			Params: string(data[off+specSize : off+specSize+paramsLen]),
		})
		if i+1 == count {
			break
		}
		next := int(binary.NativeEndian.Uint32(spec[specNext:]))
		if next < off+specSize+paramsLen+1 || next > len(data) {
			return nil, fmt.Errorf("target %d has bad next offset %d", i, next)
		}
		off = next
	}
	return targets, nil
}
