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
}

declare class Application {
  constructor(options: Application.Options);
  /** Starts the app: the primary in the entry process, a worker in each child. */
  run(): unknown;
  /** ThinkJS's global `think`. */
  static readonly think: unknown;
}

export = Application;
