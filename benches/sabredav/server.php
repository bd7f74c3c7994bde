<?php
date_default_timezone_set('UTC');
set_error_handler(function($no, $str, $file, $line) {
    if ($no & (E_DEPRECATED | E_USER_DEPRECATED)) return true;
    throw new ErrorException($str, 0, $no, $file, $line);
});
require_once 'Sabre/autoload.php';
$pdo = new PDO('sqlite:' . __DIR__ . '/data/db.sqlite');
$pdo->setAttribute(PDO::ATTR_ERRMODE, PDO::ERRMODE_EXCEPTION);
class PdoBasicAuth extends \Sabre\DAV\Auth\Backend\AbstractBasic {
    private $pdo; function __construct($pdo) { $this->pdo = $pdo; }
    protected function validateUserPass($u, $p) {
        $st = $this->pdo->prepare('SELECT digesta1 FROM users WHERE username = ?'); $st->execute(array($u));
        $a1 = $st->fetchColumn(); return $a1 !== false && hash_equals($a1, md5($u . ':SabreDAV:' . $p));
    }
}
$principals = new \Sabre\DAVACL\PrincipalBackend\PDO($pdo);
$server = new \Sabre\DAV\Server(array(
    new \Sabre\CalDAV\Principal\Collection($principals),
    new \Sabre\CalDAV\CalendarRootNode($principals, new \Sabre\CalDAV\Backend\PDO($pdo)),
    new \Sabre\CardDAV\AddressBookRoot($principals, new \Sabre\CardDAV\Backend\PDO($pdo)),
));
$server->setBaseUri('/');
$server->addPlugin(new \Sabre\DAV\Auth\Plugin(new PdoBasicAuth($pdo), 'SabreDAV'));
$server->addPlugin(new \Sabre\CalDAV\Plugin());
$server->addPlugin(new \Sabre\CardDAV\Plugin());
$acl = new \Sabre\DAVACL\Plugin();
$acl->adminPrincipals[] = 'principals/admin';
$server->addPlugin($acl);
$server->exec();
