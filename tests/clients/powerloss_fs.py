"""A FUSE file system that forgets, at a simulated power cut, everything not yet made durable
(issue 18, item 2).

    python3 powerloss_fs.py BACKING_DIR MOUNTPOINT [--hold-reads SUFFIX GATE]

serves BACKING_DIR at MOUNTPOINT. Every operation goes through to the backing directory at
once (so the broker reads what it wrote), and is also remembered until it is made durable the
way POSIX says it must be:
- file contents and sizes by fsync/fdatasync of the file;
- names (create, mkdir, rename, unlink, rmdir) by fsync of the directory that holds them (both
  directories for a rename).
When the file system is unmounted (the "power cut": kill -9 the broker, then `umount`), it
undoes, before it exits, everything not made durable: names go back (created files and
directories removed, unlinked ones restored from a hidden trash, renames reversed), then every
file's writes and truncations since its last fsync are reversed and its size set back. The
backing directory is then exactly what a disk that lost its volatile cache would hold in the
strictest case POSIX allows (ext4 keeps more: its fsync of a new file also commits its name).
The mount uses direct_io, so the kernel's page cache holds nothing of it that could outlive
the cut. fallocate is not offered (the broker treats preallocation as optional).

`power_loss_trials.py` drives it; it is not meant to be fast. With `--hold-reads SUFFIX GATE`
it is also a disk that stops answering: reads of files whose names end with SUFFIX wait for as
long as the file GATE exists (test_startup.py stalls a broker's recovery with it).
"""

import errno
import os
import sys
import threading
import time
from pathlib import Path

from fuse import FUSE, FuseOSError, Operations

TRASH = ".powerloss-trash"


class PowerLossFs(Operations):
    def __init__(self, root, hold_reads=None):
        self.root = os.path.realpath(root)
        # (suffix, gate path): reads of such files wait while the gate exists.
        self.hold_reads = hold_reads
        self.trash = os.path.join(self.root, TRASH)
        os.makedirs(self.trash, exist_ok=True)
        self.mutex = threading.RLock()
        # Data: per backing inode, (offset, old bytes) undo records since the last fsync, and
        # the size at the last fsync (None: unchanged since the last fsync).
        self.undo = {}
        self.synced_size = {}
        # Names: operations not yet made durable, in order. Each is a dict with "op", the
        # directories that must be fsynced ("dirs", a set that empties as they are) and what
        # undoing it takes.
        self.names = []
        self.trash_seq = 0

    # -- helpers -------------------------------------------------------------------------

    def _path(self, path):
        return os.path.join(self.root, path.lstrip("/"))

    @staticmethod
    def _dir_of(path):
        return os.path.dirname(path.rstrip("/")) or "/"

    def _ino(self, real):
        return os.lstat(real).st_ino

    def _remember_data(self, real, offset, length, new_size=None):
        """Saves what a write of `length` bytes at `offset` (or a truncate to `new_size`)
        will overwrite, and the size as it was, unless already saved since the last fsync."""
        ino = self._ino(real)
        size = os.path.getsize(real)
        self.synced_size.setdefault(ino, size)
        if new_size is not None:
            offset, length = new_size, max(size - new_size, 0)
        end = min(offset + length, size)
        if end > offset:
            with open(real, "rb") as file:
                file.seek(offset)
                self.undo.setdefault(ino, []).append((offset, file.read(end - offset)))

    def _name_op(self, op, dirs, **undo):
        self.names.append({"op": op, "dirs": set(dirs), **undo})

    # -- the file system -----------------------------------------------------------------

    def getattr(self, path, fh=None):
        try:
            st = os.lstat(self._path(path))
        except FileNotFoundError:
            raise FuseOSError(errno.ENOENT)
        return {key: getattr(st, key) for key in (
            "st_atime", "st_ctime", "st_gid", "st_mode", "st_mtime", "st_nlink", "st_size",
            "st_uid", "st_blocks", "st_ino")}

    def readdir(self, path, fh):
        names = [n for n in os.listdir(self._path(path)) if path != "/" or n != TRASH]
        return [".", ".."] + names

    def statfs(self, path):
        st = os.statvfs(self._path(path))
        return {key: getattr(st, key) for key in (
            "f_bavail", "f_bfree", "f_blocks", "f_bsize", "f_favail", "f_ffree", "f_files",
            "f_flag", "f_frsize", "f_namemax")}

    def access(self, path, amode):
        if not os.access(self._path(path), amode):
            raise FuseOSError(errno.EACCES)

    def chmod(self, path, mode):
        os.chmod(self._path(path), mode)

    def utimens(self, path, times=None):
        os.utime(self._path(path), times)

    def mkdir(self, path, mode):
        with self.mutex:
            os.mkdir(self._path(path), mode)
            self._name_op("mkdir", [self._dir_of(path)], path=path)

    def rmdir(self, path):
        with self.mutex:
            os.rmdir(self._path(path))
            self._name_op("rmdir", [self._dir_of(path)], path=path)

    def create(self, path, mode, fi=None):
        with self.mutex:
            real = self._path(path)
            existed = os.path.exists(real)
            fd = os.open(real, os.O_RDWR | os.O_CREAT, mode)
            if not existed:
                self._name_op("create", [self._dir_of(path)], path=path)
            return fd

    def open(self, path, flags):
        with self.mutex:
            real = self._path(path)
            if flags & os.O_TRUNC:
                self._remember_data(real, 0, 0, new_size=0)
            return os.open(real, flags & ~(os.O_DIRECT | os.O_CREAT | os.O_EXCL))

    def unlink(self, path):
        with self.mutex:
            self.trash_seq += 1
            kept = os.path.join(self.trash, str(self.trash_seq))
            os.rename(self._path(path), kept)
            self._name_op("unlink", [self._dir_of(path)], path=path, kept=kept)

    def rename(self, old, new):
        with self.mutex:
            real_new = self._path(new)
            replaced = None
            if os.path.exists(real_new) and not os.path.isdir(real_new):
                self.trash_seq += 1
                replaced = os.path.join(self.trash, str(self.trash_seq))
                os.rename(real_new, replaced)
            os.rename(self._path(old), real_new)
            self._name_op("rename", [self._dir_of(old), self._dir_of(new)], old=old, new=new,
                          replaced=replaced)

    def read(self, path, size, offset, fh):
        if self.hold_reads and path.endswith(self.hold_reads[0]):
            while os.path.exists(self.hold_reads[1]):
                time.sleep(0.05)
        return os.pread(fh, size, offset)

    def write(self, path, data, offset, fh):
        with self.mutex:
            self._remember_data(self._path(path), offset, len(data))
            return os.pwrite(fh, data, offset)

    def truncate(self, path, length, fh=None):
        with self.mutex:
            real = self._path(path)
            self._remember_data(real, 0, 0, new_size=length)
            os.truncate(real, length)

    def fsync(self, path, datasync, fh):
        with self.mutex:
            ino = os.fstat(fh).st_ino
            self.undo.pop(ino, None)
            self.synced_size.pop(ino, None)
            return 0

    def fsyncdir(self, path, datasync, fh):
        with self.mutex:
            directory = path.rstrip("/") or "/"
            for op in self.names:
                op["dirs"].discard(directory)
            self.names = [op for op in self.names if op["dirs"]]
            return 0

    def flush(self, path, fh):
        return 0

    def release(self, path, fh):
        os.close(fh)
        return 0

    # -- the power cut ---------------------------------------------------------------------

    def cut(self):
        """Undoes everything not made durable (see the module doc)."""
        with self.mutex:
            for op in reversed(self.names):
                self._undo_name(op)
            self.names = []
            by_ino = {}
            for directory, dirs, files in os.walk(self.root):
                if directory.startswith(self.trash):
                    continue
                for name in files:
                    real = os.path.join(directory, name)
                    by_ino[os.lstat(real).st_ino] = real
            for ino, size in self.synced_size.items():
                real = by_ino.get(ino)
                if real is None:
                    continue
                with open(real, "r+b") as file:
                    for offset, old in reversed(self.undo.get(ino, [])):
                        file.seek(offset)
                        file.write(old)
                    file.truncate(size)
                    os.fsync(file.fileno())
            self.undo = {}
            self.synced_size = {}
            for name in os.listdir(self.trash):
                os.unlink(os.path.join(self.trash, name))

    def _undo_name(self, op):
        real = self._path(op.get("path", "/"))
        kind = op["op"]
        if kind == "create":
            if os.path.exists(real):
                os.unlink(real)
        elif kind == "mkdir":
            if os.path.isdir(real):
                for directory, dirs, files in os.walk(real, topdown=False):
                    for name in files:
                        os.unlink(os.path.join(directory, name))
                    for name in dirs:
                        os.rmdir(os.path.join(directory, name))
                os.rmdir(real)
        elif kind == "rmdir":
            os.makedirs(real, exist_ok=True)
        elif kind == "unlink":
            os.rename(op["kept"], real)
        elif kind == "rename":
            os.rename(self._path(op["new"]), self._path(op["old"]))
            if op["replaced"]:
                os.rename(op["replaced"], self._path(op["new"]))


def main():
    backing, mountpoint = sys.argv[1], sys.argv[2]
    hold_reads = None
    if sys.argv[3:4] == ["--hold-reads"]:
        hold_reads = (sys.argv[4], sys.argv[5])
    fs = PowerLossFs(backing, hold_reads)
    Path(mountpoint).mkdir(parents=True, exist_ok=True)
    try:
        FUSE(fs, mountpoint, foreground=True, nothreads=False, direct_io=True)
    finally:
        fs.cut()


if __name__ == "__main__":
    main()
