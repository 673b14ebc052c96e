//! Error codes that cross the wire, mapped to numbers in exactly one place, and the decode
//! error every parser in this crate returns.

use serde::{Deserialize, Serialize};

/// Why the relay refused something. Sent in `ServerMsg::Error` and used as the WebTransport
/// session close code, so a client can show a clear message even when only the close arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "u32", try_from = "u32")]
pub enum ErrorCode {
    /// A frame that does not decode.
    Malformed,
    /// A frame over [`crate::limits::MAX_FRAME_BYTES`], or a field over its limit.
    TooLarge,
    /// A message that is not allowed in the session's state (e.g. `Next` before `Hello`).
    WrongState,
    /// `Hello` stated a protocol version this relay does not speak.
    UnsupportedVersion,
    /// No `Hello` arrived in time.
    HelloTimeout,
    /// The relay holds as many sessions as it is configured to.
    ServerFull,
    /// Too many sessions from one address.
    TooManyFromAddress,
    /// Chat or Next faster than allowed (not fatal: the message was dropped).
    RateLimited,
    /// A resume token that is unknown, used, or expired.
    BadResumeToken,
    /// The session was idle for too long.
    IdleTimeout,
    /// The relay is shutting down.
    ShuttingDown,
    /// A bug on the relay's side.
    Internal,
    /// Several people reported this person recently: no pairing for a while.
    CoolingOff,
    /// The operator blocked this address.
    Blocked,
    /// The relay is overloaded and cannot keep this session (its events were not read).
    Overloaded,
}

impl ErrorCode {
    /// Every code, for tests and the test vectors.
    pub const ALL: [ErrorCode; 15] = [
        ErrorCode::Malformed,
        ErrorCode::TooLarge,
        ErrorCode::WrongState,
        ErrorCode::UnsupportedVersion,
        ErrorCode::HelloTimeout,
        ErrorCode::ServerFull,
        ErrorCode::TooManyFromAddress,
        ErrorCode::RateLimited,
        ErrorCode::BadResumeToken,
        ErrorCode::IdleTimeout,
        ErrorCode::ShuttingDown,
        ErrorCode::Internal,
        ErrorCode::CoolingOff,
        ErrorCode::Blocked,
        ErrorCode::Overloaded,
    ];

    /// The number on the wire, also the WebTransport close code. 0 is left for a normal close.
    pub const fn to_code(self) -> u32 {
        match self {
            ErrorCode::Malformed => 1,
            ErrorCode::TooLarge => 2,
            ErrorCode::WrongState => 3,
            ErrorCode::UnsupportedVersion => 4,
            ErrorCode::HelloTimeout => 5,
            ErrorCode::ServerFull => 6,
            ErrorCode::TooManyFromAddress => 7,
            ErrorCode::RateLimited => 8,
            ErrorCode::BadResumeToken => 9,
            ErrorCode::IdleTimeout => 10,
            ErrorCode::ShuttingDown => 11,
            ErrorCode::Internal => 12,
            ErrorCode::CoolingOff => 13,
            ErrorCode::Blocked => 14,
            ErrorCode::Overloaded => 15,
        }
    }

    pub fn from_code(code: u32) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| c.to_code() == code)
    }

    /// A short stable name for logs, metrics labels and JSON.
    pub const fn name(self) -> &'static str {
        match self {
            ErrorCode::Malformed => "malformed",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::WrongState => "wrong_state",
            ErrorCode::UnsupportedVersion => "unsupported_version",
            ErrorCode::HelloTimeout => "hello_timeout",
            ErrorCode::ServerFull => "server_full",
            ErrorCode::TooManyFromAddress => "too_many_from_address",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::BadResumeToken => "bad_resume_token",
            ErrorCode::IdleTimeout => "idle_timeout",
            ErrorCode::ShuttingDown => "shutting_down",
            ErrorCode::Internal => "internal",
            ErrorCode::CoolingOff => "cooling_off",
            ErrorCode::Blocked => "blocked",
            ErrorCode::Overloaded => "overloaded",
        }
    }
}

impl From<ErrorCode> for u32 {
    fn from(code: ErrorCode) -> u32 {
        code.to_code()
    }
}

impl TryFrom<u32> for ErrorCode {
    type Error = UnknownErrorCode;
    fn try_from(code: u32) -> Result<Self, Self::Error> {
        ErrorCode::from_code(code).ok_or(UnknownErrorCode(code))
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown error code {0}")]
pub struct UnknownErrorCode(pub u32);

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What went wrong reading bytes from the network.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("frame of {len} bytes is over the {max}-byte limit")]
    TooLarge { len: usize, max: usize },
    #[error("frame does not decode: {0}")]
    Malformed(String),
    #[error("{field} is over its limit")]
    FieldTooLarge { field: &'static str },
}

impl DecodeError {
    /// The wire code this decode failure is reported with.
    pub fn code(&self) -> ErrorCode {
        match self {
            DecodeError::TooLarge { .. } | DecodeError::FieldTooLarge { .. } => ErrorCode::TooLarge,
            DecodeError::Malformed(_) => ErrorCode::Malformed,
        }
    }
}

impl From<postcard::Error> for DecodeError {
    fn from(e: postcard::Error) -> Self {
        DecodeError::Malformed(e.to_string())
    }
}
