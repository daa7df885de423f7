package bpf

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
)

// A policy's table: its rows laid out in the array map the programs read,
// as ipe.h describes. BASE rows sit at their op's index; digest rows at
// the slot a two-level perfect hash gives their key, so that a lookup is
// two array reads whatever the table's size.

// SeedsPerRow is how many bucket seeds a seed row holds, in its first
// words (IPE_SEEDS_PER_ROW).
const SeedsPerRow = 64

// BaseRows is the number of BASE rows at the head of a table: one per op,
// IPE_OP_INVALID included.
const BaseRows = 8

// Sizing of the perfect hash: keys per bucket, and slots per key. Four
// keys a bucket keep the seed rows small (one word per bucket); a fifth of
// the slots left empty keeps the search for the last buckets' seeds short.
const (
	keysPerBucket = 4
	slotsPerKey   = 1.25
	// maxSeed bounds the search for one bucket's seed; a table that
	// needs more grows its slots and starts again.
	maxSeed = 1 << 16
	// maxGrowths bounds those restarts.
	maxGrowths = 8
)

// ErrKeyHashCollision is returned, wrapped with the keys, when two row keys
// hash alike (KeyHash), which no seed can tell apart: a policy built for it
// can do that, as with ErrFoldCollision in package maps.
var ErrKeyHashCollision = errors.New("two row keys hash alike")

// TableRow is a row of a compiled policy with its key.
type TableRow struct {
	Key RowKey
	Row Row
}

// mix64 is murmur3's 64-bit finalizer (ipe_mix64).
func mix64(x uint64) uint64 {
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	x *= 0xc4ceb9fe1a85ec53
	x ^= x >> 33
	return x
}

// KeyHash is a row key's hash, as ipe_key_hash computes it.
func KeyHash(k RowKey) uint64 {
	w0 := uint64(k.Kind) | uint64(k.Op)<<8 | uint64(k.Link)<<16
	w1 := uint64(k.DvFold[0]) | uint64(k.DvFold[1])<<32
	w2 := uint64(k.FvFold[0]) | uint64(k.FvFold[1])<<32
	return mix64(mix64(mix64(w0)^w1) ^ w2)
}

// Geometry is where a table's parts are: what every BASE row carries.
type Geometry struct {
	Buckets, Slots uint32
}

// SeedRows is how many seed rows follow the BASE rows.
func (g Geometry) SeedRows() uint32 { return (g.Buckets + SeedsPerRow - 1) / SeedsPerRow }

// bucket is the bucket of a key's hash h.
func (g Geometry) bucket(h uint64) uint32 { return uint32(h>>32) % g.Buckets }

// slot is the slot the seed of its bucket sends a key's hash h to.
func (g Geometry) slot(h uint64, seed uint32) uint32 {
	return uint32(mix64(h^uint64(seed))) % g.Slots
}

// SlotIndex is the table index of slot s.
func (g Geometry) SlotIndex(s uint32) uint32 { return BaseRows + g.SeedRows() + s }

// BuildTable lays rows out as a table. rows must hold one BASE row for
// each op (key: kind BASE, the op, nothing else) and digest rows with
// distinct keys. The layout depends on the rows only, not on their order.
func BuildTable(rows []TableRow) ([]Row, error) {
	var bases [BaseRows]*TableRow
	var digests []int // indices into rows, sorted by key
	for i := range rows {
		k := &rows[i].Key
		if k.Kind != RowKindBase {
			digests = append(digests, i)
			continue
		}
		if int(k.Op) >= BaseRows || k.Link != 0 || k.Pad != 0 || k.DvFold != [2]uint32{} || k.FvFold != [2]uint32{} {
			return nil, fmt.Errorf("build policy table: malformed BASE row key %+v", *k)
		}
		if bases[k.Op] != nil {
			return nil, fmt.Errorf("build policy table: two BASE rows for op %d", k.Op)
		}
		bases[k.Op] = &rows[i]
	}
	for op, b := range bases {
		if b == nil {
			return nil, fmt.Errorf("build policy table: no BASE row for op %d", op)
		}
	}
	keys := make([]RowKey, len(digests))
	for i, r := range digests {
		keys[i] = rows[r].Key
	}
	geo, seeds, slots, err := place(keys)
	if err != nil {
		return nil, err
	}

	table := make([]Row, geo.SlotIndex(geo.Slots))
	for op, b := range bases {
		table[op] = b.Row
		table[op].Buckets, table[op].Slots = geo.Buckets, geo.Slots
	}
	var words [SeedsPerRow]uint32
	for r := range geo.SeedRows() {
		clear(words[:])
		copy(words[:], seeds[r*SeedsPerRow:min(len(seeds), int(r+1)*SeedsPerRow)])
		if table[BaseRows+r], err = seedRow(words); err != nil {
			return nil, err
		}
	}
	for i, s := range slots {
		row := &table[geo.SlotIndex(s)]
		*row = rows[digests[i]].Row
		row.Key = keys[i]
	}
	return table, nil
}

// place finds the perfect hash of keys (distinct): the geometry, each
// bucket's seed and each key's slot. Buckets are seeded in an order, and
// their keys placed in an order, that depend on the keys only, so the
// table does not depend on the order rows come in.
func place(keys []RowKey) (geo Geometry, seeds []uint32, slots []uint32, err error) {
	n := len(keys)
	if n == 0 {
		return Geometry{}, nil, nil, nil
	}
	hashes := make([]uint64, n)
	for i := range keys {
		hashes[i] = KeyHash(keys[i])
	}
	geo = Geometry{Buckets: uint32((n + keysPerBucket - 1) / keysPerBucket), Slots: uint32(float64(n)*slotsPerKey) + 1}
	members := make([][]int, geo.Buckets)
	for i, h := range hashes {
		b := geo.bucket(h)
		for _, j := range members[b] {
			switch {
			case keys[j] == keys[i]:
				return geo, nil, nil, fmt.Errorf("build policy table: two rows with key %+v", keys[i])
			case hashes[j] == h:
				return geo, nil, nil, fmt.Errorf("%w: %+v and %+v", ErrKeyHashCollision, keys[j], keys[i])
			}
		}
		members[b] = append(members[b], i)
	}
	for _, m := range members {
		slices.SortFunc(m, func(a, b int) int { return cmp.Compare(hashes[a], hashes[b]) })
	}
	// The largest buckets first, while most slots are free.
	order := make([]uint32, geo.Buckets)
	for b := range order {
		order[b] = uint32(b)
	}
	slices.SortStableFunc(order, func(a, b uint32) int { return cmp.Compare(len(members[b]), len(members[a])) })

	for range maxGrowths {
		if seeds, slots, ok := seedBuckets(geo, hashes, members, order); ok {
			return geo, seeds, slots, nil
		}
		geo.Slots += geo.Slots/8 + 1
	}
	return geo, nil, nil, fmt.Errorf("build policy table: no perfect hash for %d rows in %d slots", n, geo.Slots)
}

// seedBuckets gives each bucket, in order, the first seed that sends its
// keys to free slots of their own; ok is false when a bucket has none
// below maxSeed.
func seedBuckets(geo Geometry, hashes []uint64, members [][]int, order []uint32) (seeds, slots []uint32, ok bool) {
	taken := make([]bool, geo.Slots)
	seeds = make([]uint32, geo.Buckets)
	slots = make([]uint32, len(hashes))
	var tried []uint32
	for _, b := range order {
		keys := members[b]
		if len(keys) == 0 {
			break // sorted by size: the rest are empty
		}
		found := false
		for seed := uint32(0); seed < maxSeed && !found; seed++ {
			tried = tried[:0]
			found = true
			for _, k := range keys {
				s := geo.slot(hashes[k], seed)
				if taken[s] || slices.Contains(tried, s) {
					found = false
					break
				}
				tried = append(tried, s)
			}
			if found {
				seeds[b] = seed
				for i, k := range keys {
					slots[k] = tried[i]
					taken[tried[i]] = true
				}
			}
		}
		if !found {
			return nil, nil, false
		}
	}
	return seeds, slots, true
}

// seedRow is a row whose first words are seeds, as the programs read a
// seed row.
func seedRow(words [SeedsPerRow]uint32) (Row, error) {
	buf := make([]byte, binary.Size(Row{}))
	if _, err := binary.Encode(buf, binary.NativeEndian, words); err != nil {
		return Row{}, err
	}
	var row Row
	if _, err := binary.Decode(buf, binary.NativeEndian, &row); err != nil {
		return Row{}, fmt.Errorf("build policy table: seed row: %w", err)
	}
	return row, nil
}

// TableRows reads a table back into its rows: what BuildTable was given,
// the BASE rows without the geometry and the digest rows without the key
// copy they carry.
func TableRows(table []Row) ([]TableRow, error) {
	if len(table) < BaseRows {
		return nil, fmt.Errorf("policy table of %d rows: no room for its %d BASE rows", len(table), BaseRows)
	}
	geo := Geometry{Buckets: table[0].Buckets, Slots: table[0].Slots}
	if want := geo.SlotIndex(geo.Slots); uint32(len(table)) != want {
		return nil, fmt.Errorf("policy table of %d rows, its geometry %+v says %d", len(table), geo, want)
	}
	var rows []TableRow
	for op := range BaseRows {
		row := table[op]
		row.Buckets, row.Slots = 0, 0
		rows = append(rows, TableRow{Key: RowKey{Kind: RowKindBase, Op: uint8(op)}, Row: row})
	}
	for _, row := range table[geo.SlotIndex(0):] {
		if row.Key.Kind == 0 {
			continue // an empty slot
		}
		key := row.Key
		row.Key = RowKey{}
		rows = append(rows, TableRow{Key: key, Row: row})
	}
	return rows, nil
}
