package blobendpoint

import (
	"crypto/md5"
	"encoding/base64"
	"encoding/binary"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cespare/xxhash/v2"
)

const (
	// maxBlocks is Azure's limit on the blocks of one committed blob.
	maxBlocks = 50_000
	// maxBlockID is Azure's limit on a decoded block id, in bytes.
	maxBlockID = 64
	// maxBlockListBody bounds a Put Block List body: 50 000 ids of 88
	// characters in their tags fit well within it.
	maxBlockListBody = 8 << 20
)

// blockInfo is one block as received: its id (base64, as sent), its size
// and a hash of its bytes to recognise a retry.
type blockInfo struct {
	id   string
	size int64
	sum  uint64
}

// heldBlock is a block received ahead of its turn.
type heldBlock struct {
	blockInfo
	data []byte
}

// upload is one blob being written through Put Block: its Sink and the
// blocks already streamed. mu is held while writing to the Sink, which is
// what keeps the stream in order; lock order is upload.mu, then blob.mu,
// then Server.mu.
type upload struct {
	s    *Server
	b    *blobState
	name string

	mu       sync.Mutex
	sink     Sink
	done     bool
	passed   []blockInfo          // written to the Sink, in stream order
	index    map[string]int       // id → place in passed
	held     map[uint64]heldBlock // by block number, with BlockNumber only
	idLen    int                  // decoded length of this blob's ids
	size     int64                // bytes written to the Sink
	lastUsed time.Time
	timer    *time.Timer
}

// AzblobBlockNumber reads the block number from an id made by Microsoft's
// Go SDK (azblob's UploadStream, UploadBuffer and UploadFile): 64 bytes,
// a random 16-byte UUID shared by the upload's blocks, the block number as
// 4 big-endian bytes, then zeros. It is a value for Options.BlockNumber.
func AzblobBlockNumber(id []byte) (uint64, bool) {
	if len(id) != 64 {
		return 0, false
	}
	for _, c := range id[20:] {
		if c != 0 {
			return 0, false
		}
	}
	return uint64(binary.BigEndian.Uint32(id[16:20])), true
}

// putBlock is Put Block (PUT ?comp=block&blockid=…). The body is read
// whole, then streamed or held (see the package documentation).
func (s *Server) putBlock(w http.ResponseWriter, r *http.Request, name string) error {
	id := r.URL.Query().Get("blockid")
	if id == "" {
		return &azError{http.StatusBadRequest, "MissingRequiredQueryParameter",
			"A query parameter that's mandatory for this request is not specified. blockid"}
	}
	raw, err := base64.StdEncoding.DecodeString(id)
	if err != nil || len(raw) == 0 || len(raw) > maxBlockID {
		return &azError{http.StatusBadRequest, "InvalidBlockId",
			"The specified block ID is invalid. The block ID must be Base64-encoded, at most 64 bytes."}
	}
	var num uint64
	if s.blockNumber != nil {
		var ok bool
		if num, ok = s.blockNumber(raw); !ok {
			return &azError{http.StatusBadRequest, "InvalidBlockId",
				"The specified block ID is invalid. It carries no block number this endpoint can read."}
		}
		if num >= maxBlocks {
			return errBlockCount()
		}
	}
	if r.ContentLength < 0 {
		return &azError{http.StatusLengthRequired, "MissingContentLengthHeader",
			"The Content-Length header was not specified."}
	}
	if r.ContentLength > s.maxBlock {
		return &azError{http.StatusRequestEntityTooLarge, "RequestBodyTooLarge",
			fmt.Sprintf("The request body is too large and exceeds the maximum permissible limit. MaxLimit: %d", s.maxBlock)}
	}
	data := make([]byte, r.ContentLength)
	if _, err := io.ReadFull(r.Body, data); err != nil {
		return &azError{http.StatusBadRequest, "InvalidInput", "The request body ended before its Content-Length."}
	}
	if err := checkMD5(r, func() [md5.Size]byte { return md5.Sum(data) }); err != nil {
		return err
	}
	blk := heldBlock{blockInfo{id: id, size: int64(len(data)), sum: xxhash.Sum64(data)}, data}
	leaseID := r.Header.Get("x-ms-lease-id")
	for {
		b := s.blob(name, true)
		b.mu.Lock()
		b.lease.settle(s.now())
		if err := b.lease.checkWrite(leaseID); err != nil {
			b.mu.Unlock()
			return err
		}
		up := b.up
		if up == nil {
			sink, err := s.store.Create(s.ctx, name)
			if err != nil {
				b.mu.Unlock()
				return fmt.Errorf("blobendpoint: creating blob %q: %w", name, err)
			}
			up = s.newUpload(b, name, sink)
			b.up = up
		}
		b.mu.Unlock()
		again, err := up.add(blk, len(raw), num)
		if again {
			continue // the upload ended meanwhile: this block starts a new one
		}
		if err != nil {
			return err
		}
		break
	}
	h := w.Header()
	if v := r.Header.Get("Content-MD5"); v != "" {
		h.Set("Content-MD5", v)
	}
	h.Set("x-ms-request-server-encrypted", "false")
	w.WriteHeader(http.StatusCreated)
	return nil
}

func errBlockCount() *azError {
	return &azError{http.StatusConflict, "BlockCountExceedsLimit",
		fmt.Sprintf("The committed block count cannot exceed the maximum limit of %d blocks.", maxBlocks)}
}

func (s *Server) newUpload(b *blobState, name string, sink Sink) *upload {
	up := &upload{s: s, b: b, name: name, sink: sink, index: make(map[string]int), lastUsed: time.Now()}
	if s.blockNumber != nil {
		up.held = make(map[uint64]heldBlock)
	}
	up.mu.Lock() // expire must not see up.timer unset
	up.timer = time.AfterFunc(s.idle, up.expire)
	up.mu.Unlock()
	return up
}

// expire aborts the upload when it has been idle for the whole timeout;
// a request that came in the meantime pushes the deadline on. Idle is
// counted from the end of the last block's Sink.Write, not from its
// arrival: up.mu is held across every Write, so expire cannot run while
// one is in flight (it waits for it), and write sets lastUsed once the
// Write returns; a Sink slower than the timeout (storage stalling
// upstream) does not make a healthy upload look idle.
func (up *upload) expire() {
	up.mu.Lock()
	defer up.mu.Unlock()
	if up.done {
		return
	}
	if left := up.s.idle - time.Since(up.lastUsed); left > 0 {
		up.timer.Reset(left)
		return
	}
	up.fail(fmt.Errorf("blob %q: %w", up.name, ErrIdle))
}

// add takes one received block: num is its block number (with
// BlockNumber), idLen its decoded id length. again reports that the upload
// had already ended, so the caller must start a new one.
func (up *upload) add(blk heldBlock, idLen int, num uint64) (again bool, err error) {
	up.mu.Lock()
	defer up.mu.Unlock()
	if up.done {
		return true, nil
	}
	up.lastUsed = time.Now()
	if up.idLen != 0 && up.idLen != idLen {
		return false, &azError{http.StatusBadRequest, "InvalidBlobOrBlock",
			"The specified blob or block content is invalid. All block IDs of a blob must have the same length."}
	}
	up.idLen = idLen
	if up.held == nil { // arrival order
		if i, ok := up.index[blk.id]; ok {
			return false, up.again(up.passed[i], blk.blockInfo)
		}
		if len(up.passed) >= maxBlocks {
			return false, errBlockCount()
		}
		return false, up.write(blk)
	}
	next := uint64(len(up.passed))
	switch {
	case num < next:
		return false, up.again(up.passed[num], blk.blockInfo)
	case num == next:
		if err := up.write(blk); err != nil {
			return false, err
		}
		for {
			h, ok := up.held[uint64(len(up.passed))]
			if !ok {
				return false, nil
			}
			delete(up.held, uint64(len(up.passed)))
			up.s.release(h.size)
			if err := up.write(h); err != nil {
				return false, err
			}
		}
	default:
		var old int64
		if h, ok := up.held[num]; ok {
			old = h.size
		}
		if !up.s.reserve(blk.size, old) {
			up.s.busy.Add(1)
			return false, errServerBusy("Too many blocks are waiting for an earlier one.")
		}
		up.s.heldBlocks.Add(1)
		up.held[num] = blk
		return false, nil
	}
}

// again handles a block whose place was already streamed: the same id
// and bytes are a retry, anything else cannot be streamed any more.
func (up *upload) again(prev, blk blockInfo) error {
	if prev == blk {
		return nil
	}
	up.fail(fmt.Errorf("%w: blob %q: block %s came again with other content after it was streamed", ErrBlockList, up.name, blk.id))
	return errInvalidBlockList("A block was sent again with other content after it had been streamed; the upload is aborted.")
}

// write passes a block on to the Sink (up.mu held, which keeps expire
// out while the Write runs) and restarts the idle clock once it returns.
func (up *upload) write(blk heldBlock) error {
	_, err := up.sink.Write(blk.data)
	up.lastUsed = time.Now()
	if err != nil {
		err = fmt.Errorf("blobendpoint: writing blob %q: %w", up.name, err)
		up.fail(err)
		return err
	}
	up.index[blk.id] = len(up.passed)
	up.passed = append(up.passed, blk.blockInfo)
	up.size += blk.size
	return nil
}

// fail ends the upload with err (up.mu held): the Sink is aborted, held
// memory returned, and the blob forgets the upload.
func (up *upload) fail(err error) {
	if !up.end() {
		return
	}
	up.sink.Abort(err)
}

// end marks the upload done (up.mu held) and reports whether it was still
// open.
func (up *upload) end() bool {
	if up.done {
		return false
	}
	up.done = true
	up.timer.Stop()
	for _, h := range up.held {
		up.s.release(h.size)
	}
	up.held = nil
	up.b.mu.Lock()
	if up.b.up == up {
		up.b.up = nil
	}
	up.b.mu.Unlock()
	return true
}

// abort is fail for callers that do not hold up.mu.
func (up *upload) abort(err error) {
	up.mu.Lock()
	defer up.mu.Unlock()
	up.fail(fmt.Errorf("blob %q: %w", up.name, err))
}

// reserve takes n bytes of the held-block budget in place of old ones (a
// block sent again while held) and reports whether they fit.
func (s *Server) reserve(n, old int64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.held-old+n > s.maxHeld {
		return false
	}
	s.held += n - old
	return true
}

// heldBytes is the memory held by out-of-order blocks.
func (s *Server) heldBytes() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.held
}

func (s *Server) release(n int64) {
	s.mu.Lock()
	s.held -= n
	s.mu.Unlock()
}

// blockList is a Put Block List body. Its entries keep their order across
// the three tags.
type blockList struct {
	XMLName xml.Name `xml:"BlockList"`
	Entries []struct {
		XMLName xml.Name
		ID      string `xml:",chardata"`
	} `xml:",any"`
}

// putBlockList is Put Block List (PUT ?comp=blocklist): the body must name
// exactly the blocks streamed, in order, each in a <Latest> or
// <Uncommitted> tag. An empty list without an upload makes an empty blob.
func (s *Server) putBlockList(w http.ResponseWriter, r *http.Request, name string) error {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBlockListBody+1))
	if err != nil {
		return &azError{http.StatusBadRequest, "InvalidInput", "The request body could not be read."}
	}
	if len(body) > maxBlockListBody {
		return &azError{http.StatusRequestEntityTooLarge, "RequestBodyTooLarge",
			"The request body is too large and exceeds the maximum permissible limit."}
	}
	var list blockList
	if err := xml.Unmarshal(body, &list); err != nil {
		return &azError{http.StatusBadRequest, "InvalidXmlDocument", "XML specified is not syntactically valid."}
	}
	if len(list.Entries) > maxBlocks {
		return &azError{http.StatusBadRequest, "BlockListTooLong",
			fmt.Sprintf("The block list may not contain more than %d blocks.", maxBlocks)}
	}
	up, err := s.writableUpload(r, name, false)
	if err != nil {
		return err
	}
	b := s.blob(name, true)

	var info Info
	if up == nil {
		if len(list.Entries) != 0 {
			return errInvalidBlockList("None of its blocks has been received (or the upload was aborted).")
		}
		sink, err := s.store.Create(s.ctx, name)
		if err != nil {
			return fmt.Errorf("blobendpoint: creating blob %q: %w", name, err)
		}
		info = s.newInfo(0)
		if err := sink.Commit(info); err != nil {
			return fmt.Errorf("blobendpoint: committing blob %q: %w", name, err)
		}
		b.mu.Lock()
		b.blocks = nil
		b.mu.Unlock()
	} else {
		up.mu.Lock()
		if up.done {
			up.mu.Unlock()
			return errInvalidBlockList("None of its blocks has been received (or the upload was aborted).")
		}
		if why := up.mismatch(list); why != "" {
			up.fail(fmt.Errorf("%w: blob %q: %s", ErrBlockList, name, why))
			up.mu.Unlock()
			return errInvalidBlockList("It must name exactly the blocks received, in the order they were streamed: " + why + ". The upload is aborted.")
		}
		info = s.newInfo(up.size)
		up.end()
		err := up.sink.Commit(info)
		if err == nil {
			b.mu.Lock()
			b.blocks = up.passed
			b.mu.Unlock()
		}
		up.mu.Unlock()
		if err != nil {
			return fmt.Errorf("blobendpoint: committing blob %q: %w", name, err)
		}
	}
	h := w.Header()
	setVersionHeaders(h, info)
	h.Set("x-ms-request-server-encrypted", "false")
	w.WriteHeader(http.StatusCreated)
	return nil
}

// mismatch says how list differs from the blocks streamed ("" when it
// does not).
func (up *upload) mismatch(list blockList) string {
	if len(up.held) != 0 {
		return fmt.Sprintf("%d blocks are still waiting for an earlier one", len(up.held))
	}
	for i, e := range list.Entries {
		if e.XMLName.Local != "Latest" && e.XMLName.Local != "Uncommitted" {
			return fmt.Sprintf("entry %d is <%s>: only <Latest> and <Uncommitted> blocks can be committed", i, e.XMLName.Local)
		}
		if i >= len(up.passed) {
			return fmt.Sprintf("entry %d names a block beyond the %d received", i, len(up.passed))
		}
		if e.ID != up.passed[i].id {
			return fmt.Sprintf("entry %d names block %q where block %q was streamed", i, e.ID, up.passed[i].id)
		}
	}
	if len(list.Entries) < len(up.passed) {
		return fmt.Sprintf("it names %d blocks where %d were received", len(list.Entries), len(up.passed))
	}
	return ""
}

// getBlockList is Get Block List (GET ?comp=blocklist&blocklisttype=…):
// the committed blocks of the last Put Block List made through this
// Server (none for a blob written otherwise), and the blocks of the upload
// in progress, streamed ones first.
func (s *Server) getBlockList(w http.ResponseWriter, r *http.Request, name string) error {
	kind := strings.ToLower(r.URL.Query().Get("blocklisttype"))
	if kind == "" {
		kind = "committed"
	}
	if kind != "committed" && kind != "uncommitted" && kind != "all" {
		return unsupported("blocklisttype must be committed, uncommitted or all.")
	}
	var committed, uncommitted []blockInfo
	var up *upload
	if b := s.blob(name, false); b != nil {
		b.mu.Lock()
		b.lease.settle(s.now())
		if err := b.lease.checkRead(r.Header.Get("x-ms-lease-id")); err != nil {
			b.mu.Unlock()
			return err
		}
		committed, up = b.blocks, b.up
		b.mu.Unlock()
	}
	if up != nil {
		up.mu.Lock()
		if !up.done {
			uncommitted = slices.Clone(up.passed)
			nums := make([]uint64, 0, len(up.held))
			for n := range up.held {
				nums = append(nums, n)
			}
			slices.Sort(nums)
			for _, n := range nums {
				uncommitted = append(uncommitted, up.held[n].blockInfo)
			}
		}
		up.mu.Unlock()
	}
	h := w.Header()
	src, err := s.store.Open(r.Context(), name)
	switch {
	case err == nil:
		info := infoOf(src)
		setVersionHeaders(h, info)
		h.Set("x-ms-blob-content-length", formatInt(info.Size))
	case !errors.Is(err, ErrNotFound):
		return err
	case uncommitted == nil:
		return errBlobNotFound()
	default:
		committed = nil
	}
	var out struct {
		XMLName     xml.Name   `xml:"BlockList"`
		Committed   []xmlBlock `xml:"CommittedBlocks>Block"`
		Uncommitted []xmlBlock `xml:"UncommittedBlocks>Block"`
	}
	if kind != "uncommitted" {
		out.Committed = xmlBlocks(committed)
	}
	if kind != "committed" {
		out.Uncommitted = xmlBlocks(uncommitted)
	}
	body, err := xml.Marshal(out)
	if err != nil {
		return err
	}
	body = append([]byte(xml.Header), body...)
	h.Set("Content-Type", "application/xml")
	h.Set("Content-Length", formatInt(int64(len(body))))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
	return nil
}

type xmlBlock struct {
	Name string `xml:"Name"`
	Size int64  `xml:"Size"`
}

func xmlBlocks(bs []blockInfo) []xmlBlock {
	out := make([]xmlBlock, len(bs))
	for i, b := range bs {
		out[i] = xmlBlock{b.id, b.size}
	}
	return out
}

// writableUpload checks that request r may write blob name (its
// conditions and lease) and returns the blob's upload in progress (nil
// for none), taking it off the blob when take is set.
func (s *Server) writableUpload(r *http.Request, name string, take bool) (*upload, error) {
	if err := s.checkWriteConditions(r, name); err != nil {
		return nil, err
	}
	b := s.blob(name, true)
	b.mu.Lock()
	defer b.mu.Unlock()
	b.lease.settle(s.now())
	if err := b.lease.checkWrite(r.Header.Get("x-ms-lease-id")); err != nil {
		return nil, err
	}
	up := b.up
	if take {
		b.up = nil
	}
	return up, nil
}

// cancelUpload is writableUpload taking the upload, which it aborts
// (ErrCanceled): a Put Blob or Delete Blob ends a block upload.
func (s *Server) cancelUpload(r *http.Request, name string) error {
	old, err := s.writableUpload(r, name, true)
	if old != nil {
		old.abort(ErrCanceled)
	}
	return err
}
