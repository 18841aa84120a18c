/** A worker thread that cannot start, as after a broken install (WorkerPool tests). */
throw new Error('cannot start: a module is missing');
