// `import Application from 'rcluster/think'`: the module `require('rcluster/think')` gives.
import Application from './think.js';

export default Application;
export const { loadThinkJS } = Application;
