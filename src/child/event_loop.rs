//! A descriptor watched by Node's own event loop, and JavaScript called from it.
//!
//! The child's channel is read on the JavaScript thread when its socket is readable, as Node
//! reads its own IPC channel: a message wakes one thread. A reader thread of its own would wake
//! two (itself, then JavaScript's through a threadsafe function), which cost about 35 µs more per
//! message, measured. libuv's functions are Node's own, looked up in the running process: Node
//! exports them for addons, and the addon links against nothing.

use std::ffi::{c_int, c_void, CStr};
use std::io;
use std::ptr;
use std::sync::{Arc, Mutex, OnceLock};

use napi::sys;

type PollCallback = unsafe extern "C" fn(handle: *mut c_void, status: c_int, events: c_int);
type CloseCallback = unsafe extern "C" fn(handle: *mut c_void);
type AsyncCallback = unsafe extern "C" fn(handle: *mut c_void);

/// The few libuv functions used here (libuv 1.x, stable).
struct Uv {
    handle_size: unsafe extern "C" fn(c_int) -> usize,
    poll_init: unsafe extern "C" fn(*mut c_void, *mut c_void, c_int) -> c_int,
    poll_start: unsafe extern "C" fn(*mut c_void, c_int, PollCallback) -> c_int,
    poll_stop: unsafe extern "C" fn(*mut c_void) -> c_int,
    close: unsafe extern "C" fn(*mut c_void, Option<CloseCallback>),
    hold: unsafe extern "C" fn(*mut c_void),
    release: unsafe extern "C" fn(*mut c_void),
    async_init: unsafe extern "C" fn(*mut c_void, *mut c_void, AsyncCallback) -> c_int,
    async_send: unsafe extern "C" fn(*mut c_void) -> c_int,
}

/// `UV_ASYNC` and `UV_POLL` in `uv_handle_type`, and `UV_READABLE` in `uv_poll_event`.
const UV_ASYNC: c_int = 1;
const UV_POLL: c_int = 8;
const UV_READABLE: c_int = 1;

fn uv() -> io::Result<&'static Uv> {
    static UV: OnceLock<Result<Uv, String>> = OnceLock::new();
    UV.get_or_init(|| {
        fn find<T: Copy>(name: &CStr) -> Result<T, String> {
            // SAFETY: dlsym only looks the name up among the loaded objects.
            let found = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
            if found.is_null() {
                return Err(format!("{name:?} is not in this process (not Node?)"));
            }
            // SAFETY: `T` is the function pointer type libuv declares for this name.
            Ok(unsafe { std::mem::transmute_copy::<*mut c_void, T>(&found) })
        }
        Ok(Uv {
            handle_size: find(c"uv_handle_size")?,
            poll_init: find(c"uv_poll_init")?,
            poll_start: find(c"uv_poll_start")?,
            poll_stop: find(c"uv_poll_stop")?,
            close: find(c"uv_close")?,
            hold: find(c"uv_ref")?,
            release: find(c"uv_unref")?,
            async_init: find(c"uv_async_init")?,
            async_send: find(c"uv_async_send")?,
        })
    })
    .as_ref()
    .map_err(|e| io::Error::other(e.clone()))
}

/// Called when the descriptor is readable; returns whether to go on watching it.
type OnReadable = Box<dyn FnMut() -> bool>;

/// Watches a descriptor for reading on the loop of a Node environment; the callback runs on
/// its JavaScript thread. The watch does not keep the loop alive unless held.
pub struct ReadWatch {
    /// The uv_poll_t, allocated here and freed by the close callback.
    handle: *mut c_void,
}

/// The environment's event loop and a zeroed, unregistered libuv handle of `kind` for it; the
/// caller initialises the handle, and its close callback frees it.
fn new_handle(
    env: sys::napi_env,
    uv: &Uv,
    kind: c_int,
) -> io::Result<(*mut sys::uv_loop_s, *mut c_void)> {
    let mut event_loop = ptr::null_mut();
    // SAFETY: a plain query of the environment's loop, on its thread.
    if unsafe { sys::napi_get_uv_event_loop(env, &mut event_loop) } != sys::Status::napi_ok {
        return Err(io::Error::other("no event loop for this environment"));
    }
    // SAFETY: a zeroed block of the size libuv says a handle of this kind takes.
    let handle = unsafe { libc::calloc(1, (uv.handle_size)(kind)) };
    if handle.is_null() {
        return Err(io::ErrorKind::OutOfMemory.into());
    }
    Ok((event_loop, handle))
}

impl ReadWatch {
    pub fn start(env: sys::napi_env, fd: c_int, on_readable: OnReadable) -> io::Result<Self> {
        let uv = uv()?;
        let (event_loop, handle) = new_handle(env, uv, UV_POLL)?;
        // SAFETY: `handle` is a fresh poll handle for this loop; `data` (the first field of
        // every libuv handle) carries the callback until the close callback frees both.
        unsafe {
            let status = (uv.poll_init)(event_loop.cast(), handle, fd);
            if status != 0 {
                libc::free(handle);
                return Err(io::Error::from_raw_os_error(-status));
            }
            *handle.cast::<*mut OnReadable>() = Box::into_raw(Box::new(on_readable));
            (uv.release)(handle);
            let status = (uv.poll_start)(handle, UV_READABLE, on_poll);
            if status != 0 {
                (uv.close)(handle, Some(on_close));
                return Err(io::Error::from_raw_os_error(-status));
            }
        }
        Ok(ReadWatch { handle })
    }

    /// Whether the watch keeps the event loop alive.
    pub fn hold(&self, yes: bool) {
        if let Ok(uv) = uv() {
            // SAFETY: the handle is open for the life of `self`.
            unsafe { (if yes { uv.hold } else { uv.release })(self.handle) };
        }
    }
}

impl Drop for ReadWatch {
    fn drop(&mut self) {
        if let Ok(uv) = uv() {
            // SAFETY: closed once, on the loop's thread (the owner is a JavaScript object);
            // the memory goes in the close callback, when libuv is done with it.
            unsafe { (uv.close)(self.handle, Some(on_close)) };
        }
    }
}

unsafe extern "C" fn on_poll(handle: *mut c_void, _status: c_int, _events: c_int) {
    // An error status is read as the end of the stream by the callback's own read.
    // SAFETY: `data` was set to the boxed callback in `start` and lives until `on_close`.
    let callback = unsafe { &mut **handle.cast::<*mut OnReadable>() };
    if !callback() {
        // At the end of the stream the socket stays readable: watching it would spin.
        if let Ok(uv) = uv() {
            // SAFETY: the handle is open (it is being called back).
            unsafe { (uv.poll_stop)(handle) };
        }
    }
}

unsafe extern "C" fn on_close(handle: *mut c_void) {
    // SAFETY: libuv is done with the handle; the callback and the block were made in `start`.
    unsafe {
        drop(Box::from_raw(*handle.cast::<*mut OnReadable>()));
        libc::free(handle);
    }
}

/// Called on the event loop's thread when another thread wakes it.
type OnWake = Box<dyn FnMut()>;

/// Another thread's way to run a callback on a Node environment's loop (a uv_async_t). Like the
/// read watch, it does not keep the loop alive unless held.
pub struct AsyncWake {
    /// The uv_async_t, or None once it is closed: a waker on another thread may outlive it.
    handle: Arc<Mutex<Option<AsyncHandle>>>,
}

/// The address of the uv_async_t, which uv_async_send accepts from any thread.
struct AsyncHandle(*mut c_void);

// SAFETY: the only thing done with it off the loop's thread is uv_async_send, which libuv makes
// safe to call from any thread; the lock keeps it from running once the handle is closed.
unsafe impl Send for AsyncHandle {}

/// Wakes an AsyncWake from any thread; does nothing once it is closed.
#[derive(Clone)]
pub struct Waker(Arc<Mutex<Option<AsyncHandle>>>);

impl Waker {
    pub fn wake(&self) {
        let handle = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let (Some(h), Ok(uv)) = (handle.as_ref(), uv()) {
            // SAFETY: the handle is open while it is in the slot (closing takes it out first).
            unsafe { (uv.async_send)(h.0) };
        }
    }
}

impl AsyncWake {
    pub fn start(env: sys::napi_env, on_wake: OnWake) -> io::Result<Self> {
        let uv = uv()?;
        let (event_loop, handle) = new_handle(env, uv, UV_ASYNC)?;
        // SAFETY: as in ReadWatch::start: `data` carries the callback until `on_async_close`.
        unsafe {
            let status = (uv.async_init)(event_loop.cast(), handle, on_async);
            if status != 0 {
                libc::free(handle);
                return Err(io::Error::from_raw_os_error(-status));
            }
            *handle.cast::<*mut OnWake>() = Box::into_raw(Box::new(on_wake));
            (uv.release)(handle);
        }
        Ok(AsyncWake {
            handle: Arc::new(Mutex::new(Some(AsyncHandle(handle)))),
        })
    }

    pub fn waker(&self) -> Waker {
        Waker(self.handle.clone())
    }

    /// Whether the handle keeps the event loop alive.
    pub fn hold(&self, yes: bool) {
        let handle = self.handle.lock().unwrap_or_else(|e| e.into_inner());
        if let (Some(h), Ok(uv)) = (handle.as_ref(), uv()) {
            // SAFETY: the handle is open while it is in the slot; this is the loop's thread.
            unsafe { (if yes { uv.hold } else { uv.release })(h.0) };
        }
    }
}

impl Drop for AsyncWake {
    fn drop(&mut self) {
        let taken = self.handle.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let (Some(h), Ok(uv)) = (taken, uv()) {
            // SAFETY: closed once, on the loop's thread; no waker can reach it any more.
            unsafe { (uv.close)(h.0, Some(on_async_close)) };
        }
    }
}

unsafe extern "C" fn on_async(handle: *mut c_void) {
    // SAFETY: `data` was set to the boxed callback in `start` and lives until `on_async_close`.
    let callback = unsafe { &mut **handle.cast::<*mut OnWake>() };
    callback();
}

unsafe extern "C" fn on_async_close(handle: *mut c_void) {
    // SAFETY: libuv is done with the handle; the callback and the block were made in `start`.
    unsafe {
        drop(Box::from_raw(*handle.cast::<*mut OnWake>()));
        libc::free(handle);
    }
}

/// A JavaScript function called from the event loop, outside any JavaScript on the stack: as
/// Node calls its own callbacks, so that promise jobs and `process.nextTick` run after it, and a
/// throw becomes an uncaught exception.
pub struct LoopCallback {
    env: sys::napi_env,
    function: sys::napi_ref,
    context: sys::napi_async_context,
}

impl LoopCallback {
    pub fn new(env: sys::napi_env, function: sys::napi_value) -> io::Result<Self> {
        let check = |status, what: &str| {
            if status == sys::Status::napi_ok {
                Ok(())
            } else {
                Err(io::Error::other(format!("{what} failed ({status})")))
            }
        };
        let mut callback = LoopCallback {
            env,
            function: ptr::null_mut(),
            context: ptr::null_mut(),
        };
        let mut name = ptr::null_mut();
        // SAFETY: napi calls on the environment's own thread with valid out-pointers.
        unsafe {
            check(
                sys::napi_create_reference(env, function, 1, &mut callback.function),
                "napi_create_reference",
            )?;
            check(
                sys::napi_create_string_utf8(env, c"rcluster:channel".as_ptr(), -1, &mut name),
                "napi_create_string_utf8",
            )?;
            check(
                sys::napi_async_init(env, ptr::null_mut(), name, &mut callback.context),
                "napi_async_init",
            )?;
        }
        Ok(callback)
    }

    pub fn call(&self) {
        let env = self.env;
        // SAFETY: on the environment's thread, from its event loop, in a handle scope of our own.
        unsafe {
            let mut scope = ptr::null_mut();
            if sys::napi_open_handle_scope(env, &mut scope) != sys::Status::napi_ok {
                return;
            }
            let (mut function, mut receiver, mut result) =
                (ptr::null_mut(), ptr::null_mut(), ptr::null_mut());
            if sys::napi_get_reference_value(env, self.function, &mut function)
                == sys::Status::napi_ok
                && sys::napi_get_global(env, &mut receiver) == sys::Status::napi_ok
            {
                let status = sys::napi_make_callback(
                    env,
                    self.context,
                    receiver,
                    function,
                    0,
                    ptr::null(),
                    &mut result,
                );
                if status == sys::Status::napi_pending_exception {
                    let mut error = ptr::null_mut();
                    if sys::napi_get_and_clear_last_exception(env, &mut error)
                        == sys::Status::napi_ok
                    {
                        sys::napi_fatal_exception(env, error);
                    }
                }
            }
            sys::napi_close_handle_scope(env, scope);
        }
    }
}

impl Drop for LoopCallback {
    fn drop(&mut self) {
        // SAFETY: dropped on the environment's thread (the owner is a JavaScript object).
        unsafe {
            sys::napi_delete_reference(self.env, self.function);
            sys::napi_async_destroy(self.env, self.context);
        }
    }
}
