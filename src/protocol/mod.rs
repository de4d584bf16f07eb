//! The wire protocols, as pure functions of bytes: no sockets, no database, no logging, no
//! clock (time is a parameter). See `protocols/` for the notes each parser implements.
//!
//! | module | what |
//! |---|---|
//! | [`framer`] | finds `LF … CR` frames in a stream, capped, resynchronising after garbage |
//! | [`frame`] | DC-09 frame decode/encode: CRC-16/ARC, length, header, data, extended data, timestamp |
//! | [`crypto`] | AES-CBC with zero IV and DC-09 padding; keys as hex or ASCII |
//! | [`escape`] | frames as typeable text (`\n`, `\xNN`) and back |
//! | [`response`] | ACK, `*ACK`, NAK, DUH |
//! | [`policy`] | the decision table: which answer a frame gets |
//! | [`sia`] | SIA DC-03/DC-04 data blocks |
//! | [`cid`] | Contact ID (DC-05): `ADM-CID` data and raw 16-digit messages |
//! | [`surgard`] | Sur-Gard automation lines: Contact ID, SIA, heartbeat; ACK/NAK bytes |
//! | [`cidip`] | Contact ID over IP without DC-09: Lupusec/Climax frames, raw DC-05 lines, detection and splitting |
//! | [`codes`] | SIA and Contact ID code tables (data in `protocols/*.csv`) |
//! | [`crc`] | CRC-16/ARC |
//! | [`timestamp`] | `HH:MM:SS,MM-DD-YYYY` |

pub mod cid;
pub mod cidip;
pub mod codes;
pub mod crc;
pub mod crypto;
pub mod escape;
pub mod frame;
pub mod framer;
pub mod policy;
pub mod response;
pub mod sia;
pub mod surgard;
pub mod timestamp;

pub use crypto::{Key, KeyFormat, PadSource, SeededPad};
pub use frame::{Body, DecodeError, DecodeOptions, Frame, Quirks, Token, decode_frame};
pub use framer::{Chunk, Framer};
pub use policy::{AccountPolicy, Verdict, Window, evaluate};
