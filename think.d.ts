// `require('rcluster/think')`: ThinkJS's Application (the app's own `thinkjs`), run on rcluster.

declare namespace Application {
  interface Options {
    ROOT_PATH: string;
    APP_PATH?: string;
    RUNTIME_PATH?: string;
    env?: string;
    proxy?: boolean;
    [option: string]: unknown;
  }

  interface Instance {
    /** Starts the app: the primary in the entry process, a worker in each child. */
    run(): unknown;
  }
}

declare const Application: {
  /** An instance of the app's own ThinkJS Application (found from `ROOT_PATH`), run on rcluster. */
  new (options: Application.Options): Application.Instance;
  /** The app's own ThinkJS Application class, found from `rootPath`, patched to run on rcluster. */
  loadThinkJS(rootPath: string): new (options: Application.Options) => Application.Instance;
};

export = Application;
