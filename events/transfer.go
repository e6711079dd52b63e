package events

// Object transfers (package transfer) stream a file from an agent to the
// control plane over core NATS, never JetStream: no stream may capture
// rahat.xfer.>, so chunks are never stored.
//
//	rahat.rpc.<agent>.transfer              request/reply: TransferRequest → TransferReply
//	rahat.xfer.<agent>.<transfer>.data      agent → control plane: raw chunks, headers below
//	rahat.xfer.<agent>.<transfer>.ctl       control plane → agent: TransferControl

const (
	// RPCTransfer is the RPC method that starts a transfer.
	RPCTransfer = "transfer"

	transferPrefix = "rahat.xfer."
)

// TransferRequestSubject is rahat.rpc.<agentID>.transfer.
func TransferRequestSubject(agentID string) string { return RPCSubject(agentID, RPCTransfer) }

// TransferQueueGroup is the queue group in which an agent subscribes to
// TransferRequestSubject, so that one request is served once even while two
// connections of the agent are up.
const TransferQueueGroup = "transfer"

// TransferDataSubject is rahat.xfer.<agentID>.<transferID>.data, on which the
// agent publishes the chunks of one transfer.
func TransferDataSubject(agentID, transferID string) string {
	return transferPrefix + agentID + "." + transferID + ".data"
}

// TransferControlSubject is rahat.xfer.<agentID>.<transferID>.ctl, on which
// the receiver grants credit to, or cancels, one transfer.
func TransferControlSubject(agentID, transferID string) string {
	return transferPrefix + agentID + "." + transferID + ".ctl"
}

// TransferSubjects is rahat.xfer.<agentID>.>, every transfer subject of one
// agent: the agent publishes and subscribes under it.
func TransferSubjects(agentID string) string { return transferPrefix + agentID + ".>" }

// Headers of the messages on a transfer's data subject. The payload is raw
// bytes of the object.
const (
	// TransferSeqHeader is the decimal sequence number of the chunk, from 0.
	TransferSeqHeader = "Rahat-Seq"
	// TransferEOFHeader is "1" on the last chunk (possibly empty).
	TransferEOFHeader = "Rahat-Eof"
	// TransferTotalHeader, on the last chunk, is the decimal number of bytes
	// sent in this transfer (from the requested offset).
	TransferTotalHeader = "Rahat-Total"
	// TransferSHA256Header, on the last chunk, is the lowercase hex SHA-256
	// of the bytes sent in this transfer.
	TransferSHA256Header = "Rahat-Sha256"
	// TransferErrorHeader marks a message, without data or sequence, by which
	// the agent aborts the transfer; its value says why.
	TransferErrorHeader = "Rahat-Error"
)

// TransferRequest is the request on rahat.rpc.<agent>.transfer. The
// requester subscribes to the data subject of TransferID before sending it.
type TransferRequest struct {
	V int `json:"v"`
	// TransferID names the transfer's subjects: one token of letters,
	// digits, '-' and '_' (at most 64).
	TransferID string `json:"transferId"`
	Key        string `json:"key"`
	Offset     int64  `json:"offset"`
	// Window is the initial credit: the agent may send chunks 0..Window-1.
	Window int64 `json:"window"`
}

// Codes of a TransferReply that carries an error.
const (
	TransferCodeNotFound      = "not_found"
	TransferCodeBusy          = "busy"
	TransferCodeInvalidOffset = "invalid_offset"
	TransferCodeBadRequest    = "bad_request"
)

// TransferReply is the agent's answer to a TransferRequest: Size is the total
// size of the object, unless Error says why it will not be sent.
type TransferReply struct {
	V     int    `json:"v"`
	Size  int64  `json:"size"`
	Error string `json:"error,omitempty"`
	Code  string `json:"code,omitempty"`
}

// TransferControl is a message on a transfer's control subject.
type TransferControl struct {
	V int `json:"v"`
	// Credit is absolute: the agent may send every chunk whose sequence
	// number is below it. Repeating it (as a keepalive) is harmless and a
	// lost message is repaired by the next one.
	Credit int64 `json:"credit,omitempty"`
	// Cancel stops the transfer; Reason says why, for the agent's log.
	Cancel bool   `json:"cancel,omitempty"`
	Reason string `json:"reason,omitempty"`
}
