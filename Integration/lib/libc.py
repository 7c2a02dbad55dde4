"""libc calls Python's os module lacks (renameat2, linkat with flags, utimensat with
UTIME_NOW/UTIME_OMIT, fallocate, getxattr with a chosen buffer, readdir(3) itself),
through ctypes. Each raises OSError with the errno, as os's functions do."""

import ctypes
import ctypes.util
import os

libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)

AT_FDCWD = -100
AT_SYMLINK_NOFOLLOW = 0x100
AT_SYMLINK_FOLLOW = 0x400
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
UTIME_NOW = (1 << 30) - 1
UTIME_OMIT = (1 << 30) - 2
FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
FALLOC_FL_ZERO_RANGE = 0x10
XATTR_CREATE = 1
XATTR_REPLACE = 2
DT_FIFO, DT_CHR, DT_DIR, DT_BLK, DT_REG, DT_LNK, DT_SOCK = 1, 2, 4, 6, 8, 10, 12


class Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class Dirent(ctypes.Structure):
    _fields_ = [("d_ino", ctypes.c_uint64), ("d_off", ctypes.c_int64),
                ("d_reclen", ctypes.c_ushort), ("d_type", ctypes.c_ubyte),
                ("d_name", ctypes.c_char * 256)]


libc.renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
libc.linkat.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
libc.utimensat.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.POINTER(Timespec), ctypes.c_int]
libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
libc.fallocate.restype = ctypes.c_int
libc.getxattr.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_size_t]
libc.getxattr.restype = ctypes.c_ssize_t
libc.opendir.argtypes = [ctypes.c_char_p]
libc.opendir.restype = ctypes.c_void_p
libc.readdir.argtypes = [ctypes.c_void_p]
libc.readdir.restype = ctypes.POINTER(Dirent)
libc.closedir.argtypes = [ctypes.c_void_p]
libc.telldir.argtypes = [ctypes.c_void_p]
libc.telldir.restype = ctypes.c_long
libc.seekdir.argtypes = [ctypes.c_void_p, ctypes.c_long]


def check(ret, what):
    """`ret` of a libc call that returns -1 and sets errno on failure."""
    if ret < 0:
        e = ctypes.get_errno()
        raise OSError(e, f"{what}: {os.strerror(e)}")
    return ret


def renameat2(old, new, flags):
    check(libc.renameat2(AT_FDCWD, os.fsencode(old), AT_FDCWD, os.fsencode(new), flags), "renameat2")


def utimensat(path, atime, mtime, flags=0):
    """atime/mtime: (sec, nsec) tuples, or UTIME_NOW / UTIME_OMIT."""
    def ts(v):
        if v in (UTIME_NOW, UTIME_OMIT):
            return Timespec(0, v)
        return Timespec(*v)
    times = (Timespec * 2)(ts(atime), ts(mtime))
    check(libc.utimensat(AT_FDCWD, os.fsencode(path), times, flags), "utimensat")


def fallocate(fd, mode, offset, length):
    check(libc.fallocate(fd, mode, offset, length), f"fallocate(mode={mode:#x}, offset={offset}, len={length})")


def getxattr_size(path, name, size):
    buf = ctypes.create_string_buffer(max(size, 1))
    return check(libc.getxattr(os.fsencode(path), name.encode(), buf, size), "getxattr")


def raw_readdir(path):
    """[(name, d_type, d_ino)] in the order readdir(3) returns them."""
    d = libc.opendir(os.fsencode(path))
    if not d:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e), str(path))
    out = []
    try:
        while True:
            ctypes.set_errno(0)
            ent = libc.readdir(d)
            if not ent:
                assert ctypes.get_errno() == 0, os.strerror(ctypes.get_errno())
                return out
            e = ent.contents
            out.append((e.d_name.decode("utf-8", "surrogateescape"), e.d_type, e.d_ino))
    finally:
        libc.closedir(d)
